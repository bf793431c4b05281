"""The official `anthropic` Python SDK, unmodified, against the real gateway-server binary.

Tests run in file order; the last one stops the gateway with SIGTERM and checks the request log
row for row against every response the clients received.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import anthropic
import httpx
import pytest

from conftest import (
    ALIAS,
    API_KEY,
    EXPECTED_COST_NANOUSD,
    INPUT_TOKENS,
    MOCK_TEXT,
    MODEL,
    OUTPUT_TOKENS,
    SHUTDOWN_LIMIT_S,
    Gateway,
)

MESSAGES = [{"role": "user", "content": "Say hello."}]

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
# The mock fills a tool input from the schema: strings "mock", an enum's first member.
EXPECTED_TOOL_INPUT = {"location": "mock", "unit": "celsius"}


def _text(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def test_messages_create(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert message.type == "message"
    assert message.role == "assistant"
    assert _text(message) == MOCK_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == INPUT_TOKENS
    assert message.usage.output_tokens == OUTPUT_TOKENS


def test_bearer_auth_token(gateway: Gateway) -> None:
    with gateway.client(api_key=None, auth_token=API_KEY) as client:
        message = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert _text(message) == MOCK_TEXT
    sent = gateway.ledger.seen[-1].request_headers
    assert sent.get("authorization") == f"Bearer {API_KEY}"
    assert "x-api-key" not in sent


def test_messages_stream_helper(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        request_id = stream.response.headers.get("x-request-id")
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert request_id and request_id.startswith("req_")
    assert len(pieces) >= 2, f"expected the text in several deltas, got {pieces!r}"
    assert "".join(pieces) == MOCK_TEXT
    assert _text(final) == MOCK_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == INPUT_TOKENS
    assert final.usage.output_tokens == OUTPUT_TOKENS


def test_messages_create_stream_raw_events(client: anthropic.Anthropic) -> None:
    stream = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, stream=True)
    with stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    assert "message_delta" in kinds
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == MOCK_TEXT
    start = events[0]
    assert start.message.usage.input_tokens == INPUT_TOKENS
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == OUTPUT_TOKENS


def test_tool_use_round(client: anthropic.Anthropic) -> None:
    question = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER_TOOL], messages=question)
    assert first.stop_reason == "tool_use"
    tool_uses = [b for b in first.content if b.type == "tool_use"]
    assert len(tool_uses) == 1
    call = tool_uses[0]
    assert call.name == "get_weather"
    assert call.input == EXPECTED_TOOL_INPUT
    assert call.id

    follow_up = question + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER_TOOL], messages=follow_up)
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert _text(second) == MOCK_TEXT


def test_tool_use_round_streaming(client: anthropic.Anthropic) -> None:
    question = [{"role": "user", "content": "What's the weather in Paris?"}]
    partial_json: list[str] = []
    with client.messages.stream(model=MODEL, max_tokens=256, tools=[WEATHER_TOOL], messages=question) as stream:
        for event in stream:
            if event.type == "input_json":
                partial_json.append(event.partial_json)
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    assert len(partial_json) >= 2, f"tool input should arrive in several input_json_delta events: {partial_json}"
    assert json.loads("".join(partial_json)) == EXPECTED_TOOL_INPUT
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert call.input == EXPECTED_TOOL_INPUT

    follow_up = question + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}]},
    ]
    with client.messages.stream(model=MODEL, max_tokens=256, tools=[WEATHER_TOOL], messages=follow_up) as stream:
        text = "".join(stream.text_stream)
        second = stream.get_final_message()
    assert text == MOCK_TEXT
    assert second.stop_reason == "end_turn"
    assert all(b.type == "text" for b in second.content)


def test_concurrent_streams(gateway: Gateway) -> None:
    """Eight streams at once on one client (connection pool): every one completes intact."""
    results: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def one(client: anthropic.Anthropic) -> None:
        try:
            with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
                text = "".join(stream.text_stream)
                results.append((text, stream.get_final_message().usage.output_tokens))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with gateway.client() as client:
        threads = [threading.Thread(target=one, args=(client,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert results == [(MOCK_TEXT, OUTPUT_TOKENS)] * 8


def test_count_tokens(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert isinstance(counted.input_tokens, int)
    assert counted.input_tokens > 0


def test_models_list(client: anthropic.Anthropic) -> None:
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert MODEL in ids
    # Anthropic's shape (the SDK sends anthropic-version), not OpenAI's.
    for model in page.data:
        assert model.type == "model", model
        assert model.display_name, model
        assert model.created_at is not None, model
    # Auto-pagination terminates and sees the same models.
    assert MODEL in [m.id for m in client.models.list()]


def test_model_redirect(client: anthropic.Anthropic, gateway: Gateway) -> None:
    response = client.messages.with_raw_response.create(model=ALIAS, max_tokens=64, messages=MESSAGES)
    message = response.parse()
    assert _text(message) == MOCK_TEXT
    request_id = response.headers["x-request-id"]
    row = gateway.wait_row(request_id)
    assert row["original_model"] == ALIAS
    assert row["forwarded_model"] == MODEL
    assert row["status_code"] == 200
    assert row["outcome"] == "success"
    # Priced by the model actually used upstream.
    assert row["cost_nanousd"] == EXPECTED_COST_NANOUSD


def test_session_ids(client: anthropic.Anthropic, gateway: Gateway) -> None:
    claude_code_session = str(uuid.uuid4())
    tagged = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        messages=MESSAGES,
        metadata={"user_id": f"user_{'a' * 64}_account_{uuid.uuid4()}_session_{claude_code_session}"},
    )
    header_session = "e2e-session-1"
    by_header = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=MESSAGES, extra_headers={"x-session-id": header_session}
    )
    conversation = [{"role": "user", "content": f"A conversation opening {uuid.uuid4()}"}]
    hashed = [
        client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=conversation) for _ in range(2)
    ]
    other = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": f"Another {uuid.uuid4()}"}]
    )
    session = {
        name: gateway.wait_row(r.headers["x-request-id"])["session_id"]
        for name, r in [("tagged", tagged), ("header", by_header), ("h1", hashed[0]), ("h2", hashed[1]), ("other", other)]
    }
    assert session["tagged"] == claude_code_session
    assert session["header"] == header_session
    assert session["h1"] and session["h1"] == session["h2"], "same key + same opening = same session"
    assert session["other"] and session["other"] != session["h1"]


def test_wrong_key_is_authentication_error(gateway: Gateway) -> None:
    with gateway.client(api_key="sk-wrong-key") as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    err = caught.value
    assert err.status_code == 401
    assert isinstance(err.body, dict)
    assert err.body.get("type") == "error"
    assert err.body["error"]["type"] == "authentication_error"

    with gateway.client(api_key=None, auth_token="sk-wrong-bearer") as client:
        with pytest.raises(anthropic.AuthenticationError):
            client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)


def test_missing_model_is_invalid_request(raw: httpx.Client) -> None:
    r = raw.post(
        "/v1/messages",
        headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"},
        json={"max_tokens": 64, "messages": MESSAGES},
    )
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert r.headers.get("x-request-id")


def test_claude_code_style_beta_query(raw: httpx.Client) -> None:
    """Claude Code calls `/v1/messages?beta=true` with `anthropic-beta` and bearer auth."""
    r = raw.post(
        "/v1/messages",
        params={"beta": "true"},
        headers={
            "authorization": f"Bearer {API_KEY}",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14",
        },
        json={"model": MODEL, "max_tokens": 64, "stream": True, "messages": MESSAGES},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line.split(":", 1)[1].strip() for line in r.text.splitlines() if line.startswith("event:")]
    assert events[0] == "message_start" and events[-1] == "message_stop", events


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_unreachable_upstream_is_api_error(dead_gateway: Gateway, stream: bool) -> None:
    with dead_gateway.client() as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            if stream:
                with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as s:
                    s.until_done()
            else:
                client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    err = caught.value
    assert err.status_code in (502, 503, 504, 529), err
    assert isinstance(err.body, dict) and err.body.get("type") == "error", err.body
    assert err.body["error"]["type"] in ("api_error", "overloaded_error"), err.body
    row = dead_gateway.wait_row(err.response.headers["x-request-id"])
    assert row["status_code"] == err.status_code
    assert row["outcome"] in ("failed", "upstream_error"), row
    assert row["provider_name"] == "mock"
    assert row["stream"] == int(stream)
    assert row["input_tokens"] == 0 and row["output_tokens"] == 0
    assert row["error"], row


def test_client_disconnect_mid_stream(slow_gateway: Gateway) -> None:
    """The client goes away after a few events: the row says client_abort, with input counted."""
    with slow_gateway.client() as client:
        started = time.monotonic()
        stream = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, stream=True)
        with stream:
            request_id = stream.response.headers["x-request-id"]
            seen = []
            for event in stream:
                seen.append(event.type)
                if len(seen) >= 4:
                    break
        closed_after = time.monotonic() - started
    assert seen[:2] == ["message_start", "content_block_start"]
    # The whole stream would take about 40 x 50 ms; we left well before its end.
    assert closed_after < 1.5, closed_after
    row = slow_gateway.wait_row(request_id, timeout=10)
    assert row["outcome"] == "client_abort", row
    assert row["stream"] == 1
    assert row["status_code"] == 200
    assert row["input_tokens"] == INPUT_TOKENS
    assert row["duration_ms"] < 1900, f"the gateway should notice the disconnect promptly: {row}"

    # The gateway is unharmed and serves the next request.
    with slow_gateway.client() as client:
        message = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert _text(message) == MOCK_TEXT


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_client_gone_before_response_head_is_logged(late_gateway: Gateway, stream: bool) -> None:
    before = len(late_gateway.rows())
    with late_gateway.client(timeout=0.3) as client:
        with pytest.raises(anthropic.APITimeoutError):
            if stream:
                with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as s:
                    s.until_done()
            else:
                client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    # The request reached the gateway and was forwarded: it must leave exactly one row.
    deadline = time.monotonic() + 2.5
    while len(late_gateway.rows()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = late_gateway.rows()[before:]
    assert len(rows) == 1, f"expected one row for the abandoned request, got {rows}"
    assert rows[0]["outcome"] == "client_abort", rows[0]
    assert rows[0]["stream"] == int(stream)
    assert rows[0]["user_id"] is not None and rows[0]["key_id"] is not None


def test_sigterm_finishes_in_flight_stream(slow_gateway: Gateway) -> None:
    """SIGTERM while a stream is in flight: the stream completes, its row is flushed, exit 0."""
    with slow_gateway.client() as client:
        with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
            request_id = stream.response.headers["x-request-id"]
            texts = stream.text_stream
            pieces = [next(texts)]
            stopper = threading.Thread(target=slow_gateway.stop)
            stopper.start()
            pieces.extend(texts)
            final = stream.get_final_message()
    stopper.join(SHUTDOWN_LIMIT_S + 5)
    assert slow_gateway.process.returncode == 0, slow_gateway.process.logs()
    assert "".join(pieces) == MOCK_TEXT
    assert final.usage.output_tokens == OUTPUT_TOKENS
    rows = slow_gateway.rows("request_id = ?", (request_id,))
    assert len(rows) == 1, "the in-flight request must be logged by the time the process exits"
    assert rows[0]["outcome"] == "success"
    assert rows[0]["output_tokens"] == OUTPUT_TOKENS
    assert rows[0]["cost_nanousd"] == EXPECTED_COST_NANOUSD


@pytest.mark.final
def test_request_log_matches_every_response(gateway: Gateway) -> None:
    """Last: stop the gateway (SIGTERM flushes the log), then compare the log with the ledger."""
    # Make sure this check has requests to look at even when run alone.
    with gateway.client() as client:
        client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
        with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
            stream.until_done()

    assert gateway.stop() == 0, gateway.process.logs()
    assert gateway.process.stop_seconds is not None and gateway.process.stop_seconds < SHUTDOWN_LIMIT_S

    seen = gateway.ledger.seen
    rows = {r["request_id"]: r for r in gateway.rows()}
    missing_id = [s for s in seen if not s.request_id]
    assert not missing_id, f"responses without x-request-id: {missing_id}"
    seen_ids = [s.request_id for s in seen]
    assert len(set(seen_ids)) == len(seen_ids), "x-request-id must be unique per response"
    assert set(rows) == set(seen_ids), (
        f"one row per request: {len(seen)} responses, {len(rows)} rows; "
        f"without row: {set(seen_ids) - set(rows)}, without response: {set(rows) - set(seen_ids)}"
    )
    assert len(rows) == len(seen)

    counts = {"messages_ok": 0, "stream_ok": 0, "rejected": 0}
    for s in seen:
        row = rows[s.request_id]
        ctx = f"{s.method} {s.path} -> {s.status}: {row}"
        assert row["status_code"] == s.status, ctx
        assert row["method"] == s.method, ctx
        assert row["endpoint"] == s.path, ctx
        assert row["user_agent"] == s.request_headers.get("user-agent"), ctx
        if "x-stainless-lang" in s.request_headers:
            assert row["user_agent"].startswith("Anthropic/Python"), ctx
        if 200 <= s.status < 300:
            assert row["outcome"] == "success", ctx
            assert row["user_id"] is not None and row["key_id"] is not None, ctx
        else:
            assert row["outcome"] == "rejected", ctx
            assert row["error"], ctx
            counts["rejected"] += 1
        if s.path == "/v1/messages" and s.status == 200:
            counts["messages_ok"] += 1
            assert row["provider_name"] == "mock", ctx
            assert row["forwarded_model"] == MODEL, ctx
            assert row["input_tokens"] == INPUT_TOKENS, ctx
            assert row["output_tokens"] == OUTPUT_TOKENS, ctx
            assert row["cost_nanousd"] == EXPECTED_COST_NANOUSD, ctx
            assert row["session_id"], ctx
            assert row["dialect"], ctx
            assert row["duration_ms"] >= 0 and row["ttfb_ms"] is not None, ctx
            if row["stream"]:
                counts["stream_ok"] += 1
                assert row["ttft_ms"] is not None, ctx
    assert counts["messages_ok"] >= 2 and counts["stream_ok"] >= 1, counts
