"""The in-process API: `await gw.request(...)`, `gw.request_sync(...)`, streaming, usage records,
config forms and errors."""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
import threading
import time
from typing import Any, Callable, Dict, List

import pytest

import llm_gateway
from llm_gateway.testing import MockUpstream

from conftest import (
    ANTHROPIC_HEADERS,
    CLAUDE_COST_NANOS,
    INPUT_TOKENS,
    KEY,
    MESSAGES,
    MOCK_TEXT,
    MODEL,
    OUTPUT_TOKENS,
    Usage,
    config,
)

BODY = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES}


def sse_event_names(body: bytes) -> List[str]:
    return [line[len("event: ") :] for line in body.decode().splitlines() if line.startswith("event: ")]


def test_async_request_non_stream(gateway: llm_gateway.Gateway, usage: Usage, mock: MockUpstream) -> None:
    async def main() -> Dict[str, Any]:
        resp = await gateway.request("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY)
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.header("X-Request-Id")
        data = await resp.json()
        assert json.loads(await resp.read()) == data  # the body is kept after json()
        return data

    data = asyncio.run(main())
    assert data["content"][0]["text"] == MOCK_TEXT
    [record] = usage.wait_exactly(1)
    assert record["outcome"] == "success"
    assert record["usage"]["input_tokens"] == INPUT_TOKENS
    assert record["usage"]["output_tokens"] == OUTPUT_TOKENS
    assert record["cost"] == CLAUDE_COST_NANOS
    assert record["provider_name"] == "claude-main"
    # The provider's own key went upstream, never the caller's gateway key.
    [sent] = mock.received()
    assert sent["headers"]["x-api-key"] == "upstream-secret"
    assert sent["json"]["model"] == MODEL


def test_stream_chunks_arrive_as_produced(gateway: llm_gateway.Gateway, mock: MockUpstream, usage: Usage) -> None:
    """With 150 ms between upstream deltas, the first chunk must reach Python long before the
    last: the body is relayed, not buffered whole."""
    mock.set_behavior({"chunks": 4, "chunk_delay": {"secs": 0, "nanos": 150_000_000}})

    async def main() -> List[float]:
        start = time.monotonic()
        resp = await gateway.request("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body={**BODY, "stream": True})
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        arrivals = []
        chunks = []
        async for chunk in resp:
            arrivals.append(time.monotonic() - start)
            chunks.append(chunk)
        body = b"".join(chunks)
        assert sse_event_names(body)[0] == "message_start"
        assert sse_event_names(body)[-1] == "message_stop"
        assert body.count(b"content_block_delta") >= 4
        return arrivals

    arrivals = asyncio.run(main())
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] >= 0.3, arrivals
    [record] = usage.wait_exactly(1)
    assert record["stream"] is True and record["outcome"] == "success"


def test_sync_request_read_json_and_iteration(gateway: llm_gateway.Gateway, usage: Usage) -> None:
    resp = gateway.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY)
    assert resp.status == 200
    assert resp.json()["content"][0]["text"] == MOCK_TEXT
    assert json.loads(resp.read())["type"] == "message"  # read() again: the body is kept

    stream = gateway.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body={**BODY, "stream": True})
    chunks = list(stream)
    assert len(chunks) >= 1
    assert sse_event_names(b"".join(chunks))[-1] == "message_stop"
    records = usage.wait_exactly(2)
    assert [r["stream"] for r in records] == [False, True]


def test_usage_callbacks_run_on_their_own_thread(gateway: llm_gateway.Gateway, usage: Usage) -> None:
    seen: List[str] = []
    gateway.on_usage(lambda r: seen.append(r["request_id"]))
    resp = gateway.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY)
    resp.read()
    [record] = usage.wait_exactly(1)
    # Called on the binding's dispatch thread (a Rust thread, so Python names it "Dummy-N"),
    # never on the thread that made the request.
    assert len(usage.threads) == 1 and usage.threads[0] != threading.current_thread().name
    assert seen == [record["request_id"]] == [resp.headers["x-request-id"]]
    # The record is the canonical usage-record JSON: every field of gateway_core's UsageRecord.
    for field in ("created_at", "user_id", "key_id", "provider_id", "endpoint", "dialect", "status_code",
                  "duration_ms", "ttfb_ms", "session_id", "decision_chain", "translation_notes"):
        assert field in record, field
    assert record["decision_chain"], "the decision chain lists the attempt"
    assert gateway.remove_usage_callback(usage) is True
    gateway.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY).read()
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(seen) == 2 and len(usage.records) == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_failing_usage_callback_does_not_stop_others(
    gateway: llm_gateway.Gateway, usage: Usage, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: List[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))

    def broken(_record: Dict[str, Any]) -> None:
        raise RuntimeError("callback bug")

    gateway.on_usage(broken)
    gateway.on_usage(usage)  # registered twice now: the fixture's and this one
    gateway.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY).read()
    assert len(usage.wait_exactly(2)) == 2
    # The error was reported the way Python reports errors it cannot raise (sys.unraisablehook).
    assert [str(e) for e in reported] == ["callback bug"]


def test_closing_a_stream_early_records_a_client_abort(
    gateway: llm_gateway.Gateway, mock: MockUpstream, usage: Usage
) -> None:
    mock.set_behavior({"chunks": 5, "chunk_delay": {"secs": 0, "nanos": 100_000_000}})

    async def main() -> None:
        resp = await gateway.request("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body={**BODY, "stream": True})
        async for _chunk in resp:
            break
        await resp.aclose()
        with pytest.raises(llm_gateway.StreamError) as err:
            await resp.read()
        assert err.value.code in ("stream_consumed", "stream_closed")

    asyncio.run(main())
    [record] = usage.wait_exactly(1)
    assert record["outcome"] == "client_abort"


def test_errors_come_back_in_the_callers_dialect(gateway: llm_gateway.Gateway, usage: Usage) -> None:
    bad_key = gateway.request_sync(
        "POST", "/v1/chat/completions", headers={"authorization": "Bearer sk-nobody-0000"}, body=BODY
    )
    assert bad_key.status == 401
    assert bad_key.json()["error"]["type"] == "authentication_error"
    malformed = gateway.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=b"{not json")
    assert malformed.status == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    unknown = gateway.request_sync("GET", "/nowhere", headers=ANTHROPIC_HEADERS)
    assert unknown.status == 404
    records = usage.wait_exactly(3)
    assert [r["status_code"] for r in records] == [401, 400, 404]
    assert {r["outcome"] for r in records} == {"rejected"}


def test_config_forms(mock: MockUpstream, tmp_path: pathlib.Path) -> None:
    toml = f"""
[[providers]]
name = "claude-main"
type = "claude"
base_url = "{mock.url}"
api_key = "upstream-secret"

[[users]]
name = "alice"
[[users.keys]]
name = "laptop"
key = "{KEY}"
"""
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    for cfg in (toml, str(path), path, config(mock.url)):
        gw = llm_gateway.Gateway(cfg)
        assert gw.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY).status == 200


def test_config_errors_are_config_errors(mock: MockUpstream, tmp_path: pathlib.Path) -> None:
    with pytest.raises(llm_gateway.ConfigError) as err:
        llm_gateway.Gateway({"providers": [{"name": "x", "type": "claude", "base_url": mock.url, "api_key": "k",
                                            "no_such_option": 1}]})
    assert err.value.code == "invalid_config"
    assert "no_such_option" in str(err.value)
    assert isinstance(err.value, llm_gateway.GatewayError) and isinstance(err.value, ValueError)
    with pytest.raises(llm_gateway.ConfigError):
        llm_gateway.Gateway("[[providers]]\nname = ")
    with pytest.raises(llm_gateway.ConfigError):
        llm_gateway.Gateway(str(tmp_path / "missing.toml"))
    with pytest.raises(llm_gateway.ConfigError):
        llm_gateway.Gateway({"users": [{"name": "bob", "keys": [{"name": "k", "key": "short"}]}]})
    with pytest.raises(TypeError):
        llm_gateway.Gateway(42)  # type: ignore[arg-type]
    with pytest.raises(llm_gateway.ConfigError) as err:
        llm_gateway.Gateway(config(mock.url), redis_url="not a url")
    assert err.value.code == "invalid_redis_url"


def test_bad_arguments_raise_before_anything_is_sent(gateway: llm_gateway.Gateway, mock: MockUpstream) -> None:
    with pytest.raises(ValueError):
        gateway.request_sync("P O S T", "/v1/messages")
    with pytest.raises(ValueError):
        gateway.request_sync("POST", "v1/messages")
    with pytest.raises(TypeError):
        gateway.request_sync("POST", "/v1/messages", headers={"x-api-key": 5})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        gateway.request_sync("POST", "/v1/messages", body={"model": object()})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        gateway.on_usage("not callable")  # type: ignore[arg-type]
    assert mock.received() == []


def test_headers_as_pairs_and_bytes_and_body_as_text(gateway: llm_gateway.Gateway, mock: MockUpstream) -> None:
    headers = [(b"x-api-key", KEY.encode()), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")]
    resp = gateway.request_sync("POST", "/v1/messages", headers=headers, body=json.dumps(BODY))
    assert resp.status == 200
    assert mock.received()[0]["json"]["max_tokens"] == 64


def test_concurrent_async_requests(gateway: llm_gateway.Gateway, usage: Usage) -> None:
    async def one() -> str:
        resp = await gateway.request("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY)
        return (await resp.json())["content"][0]["text"]

    async def main() -> List[str]:
        return await asyncio.gather(*(one() for _ in range(20)))

    assert asyncio.run(main()) == [MOCK_TEXT] * 20
    assert len(usage.wait_exactly(20)) == 20


def test_gil_is_released_while_waiting(gateway: llm_gateway.Gateway, mock: MockUpstream) -> None:
    """A Python thread keeps running while another waits in request_sync on a slow upstream."""
    mock.set_behavior({"first_byte_delay": {"secs": 0, "nanos": 400_000_000}})
    ticks: List[int] = []
    done = threading.Event()

    def ticker() -> None:
        while not done.is_set():
            ticks.append(1)
            time.sleep(0.01)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        gateway.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY).read()
    finally:
        done.set()
        t.join()
    assert len(ticks) >= 10, len(ticks)


def test_mock_upstream_helpers(mock: MockUpstream, make_gateway: Callable[..., llm_gateway.Gateway]) -> None:
    assert mock.url.startswith("http://127.0.0.1:")
    assert mock.behavior["reply_text"] == MOCK_TEXT
    mock.set_behavior({"reply_text": "custom", "usage": {"input_tokens": 7, "output_tokens": 3}})
    assert mock.behavior["usage"]["input_tokens"] == 7
    with pytest.raises(ValueError):
        mock.set_behavior({"no_such_knob": True})
    gw = make_gateway()
    resp = gw.request_sync("POST", "/v1/messages?beta=true", headers=ANTHROPIC_HEADERS, body=BODY)
    assert resp.json()["content"][0]["text"] == "custom"
    [req] = mock.wait_for_requests(1)
    assert req["method"] == "POST" and req["path"] == "/v1/messages?beta=true"
    assert isinstance(req["body"], bytes) and req["json"]["model"] == MODEL
    mock.clear_received()
    assert mock.received() == []
    with pytest.raises(TimeoutError):
        mock.wait_for_requests(1, timeout=0.05)
    # An upstream client error comes back unchanged (no retry, no failover).
    mock.set_behavior({"force_status": 400})
    failed = gw.request_sync("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, body=BODY)
    assert failed.status == 400 and failed.json()["error"]["type"] == "invalid_request_error"


def test_header_values_beyond_latin1_go_out_as_utf8(gateway: llm_gateway.Gateway, mock: MockUpstream) -> None:
    headers = {**ANTHROPIC_HEADERS, "x-latin": "caf\u00e9", "x-wide": "\u20acuro"}
    assert gateway.request_sync("POST", "/v1/messages", headers=headers, body=BODY).status == 200
    [sent] = mock.received()
    # The mock reports non-ASCII header bytes as latin-1 text: encoding it back gives the bytes sent.
    assert sent["headers"]["x-latin"].encode("latin-1") == "caf\u00e9".encode("latin-1")
    assert sent["headers"]["x-wide"].encode("latin-1") == "\u20acuro".encode("utf-8")
