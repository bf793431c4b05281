"""`gw.asgi()`: through httpx's ASGI transport, mounted in Starlette, and driven directly to see
that streamed bodies go out chunk by chunk."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List, MutableMapping

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import llm_gateway
from llm_gateway.testing import MockUpstream

from conftest import ANTHROPIC_HEADERS, MESSAGES, MOCK_TEXT, MODEL, Usage

BODY = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES}


def test_httpx_asgi_transport_non_stream_and_stream(gateway: llm_gateway.Gateway, usage: Usage) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=gateway.asgi())
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            resp = await client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json=BODY)
            assert resp.status_code == 200
            assert resp.json()["content"][0]["text"] == MOCK_TEXT
            assert resp.headers["x-request-id"]

            async with client.stream("POST", "/v1/messages", headers=ANTHROPIC_HEADERS, json={**BODY, "stream": True}) as s:
                assert s.headers["content-type"].startswith("text/event-stream")
                text = "".join([piece async for piece in s.aiter_text()])
            assert "event: message_start" in text and "event: message_stop" in text

            bad = await client.post("/v1/messages", headers={"x-api-key": "sk-nobody-0000"}, json=BODY)
            assert bad.status_code == 401 and bad.json()["type"] == "error"

    asyncio.run(main())
    records = usage.wait_exactly(3)
    assert [r["status_code"] for r in records] == [200, 200, 401]


def test_mounted_in_starlette_under_a_prefix(gateway: llm_gateway.Gateway, mock: MockUpstream) -> None:
    async def home(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home), Mount("/llm", app=gateway.asgi())])

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            assert (await client.get("/")).text == "home"
            resp = await client.post("/llm/v1/messages?beta=true", headers=ANTHROPIC_HEADERS, json=BODY)
            assert resp.status_code == 200, resp.text
            assert resp.json()["content"][0]["text"] == MOCK_TEXT
            gemini = await client.post(
                "/llm/v1beta/models/gemini-2.5-flash:generateContent",
                headers={"x-goog-api-key": "sk-nobody-0000"},
                json={"contents": []},
            )
            # The path kept its colon and reached the Gemini endpoint: a Gemini-shaped 401.
            assert gemini.status_code == 401 and gemini.json()["error"]["status"] == "UNAUTHENTICATED"

    asyncio.run(main())
    # The mount prefix is not part of what the gateway saw, or forwarded.
    assert mock.received()[0]["path"] == "/v1/messages?beta=true"


def test_asgi_streams_chunk_by_chunk(gateway: llm_gateway.Gateway, mock: MockUpstream, usage: Usage) -> None:
    mock.set_behavior({"chunks": 4, "chunk_delay": {"secs": 0, "nanos": 150_000_000}})
    import json

    body = json.dumps({**BODY, "stream": True}).encode()
    sent: List[MutableMapping[str, Any]] = []
    times: List[float] = []

    async def main() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Dict[str, Any]:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)
            times.append(time.monotonic())

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/messages",
            "raw_path": b"/v1/messages",
            "root_path": "",
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in ANTHROPIC_HEADERS.items()],
        }
        await gateway.asgi()(scope, receive, send)

    asyncio.run(main())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) >= 4, "several body messages, not one buffered body"
    assert bodies[-1]["more_body"] is False
    assert times[-1] - times[1] >= 0.3, "chunks went out as the upstream produced them"
    assert b"message_stop" in b"".join(m["body"] for m in bodies)
    usage.wait_exactly(1)


def test_asgi_client_disconnect_mid_stream_is_recorded(
    gateway: llm_gateway.Gateway, mock: MockUpstream, usage: Usage
) -> None:
    mock.set_behavior({"chunks": 6, "chunk_delay": {"secs": 0, "nanos": 100_000_000}})
    import json

    body = json.dumps({**BODY, "stream": True}).encode()

    class Gone(Exception):
        pass

    async def main() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        count = 0

        async def receive() -> Dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal count
            count += 1
            if count == 3:
                raise Gone()

        scope = {"type": "http", "method": "POST", "path": "/v1/messages", "root_path": "", "query_string": b"",
                 "headers": [(k.encode(), v.encode()) for k, v in ANTHROPIC_HEADERS.items()]}
        try:
            await gateway.asgi()(scope, receive, send)
        except Gone:
            pass

    asyncio.run(main())
    [record] = usage.wait_exactly(1)
    assert record["outcome"] == "client_abort"


def test_lifespan_is_acknowledged(gateway: llm_gateway.Gateway) -> None:
    async def main() -> List[str]:
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        out: List[str] = []

        async def receive() -> Dict[str, Any]:
            return inbox.pop(0)

        async def send(message: MutableMapping[str, Any]) -> None:
            out.append(message["type"])

        await gateway.asgi()({"type": "lifespan"}, receive, send)
        return out

    assert asyncio.run(main()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
