"""Type-checked (never run) by test_typing.py: typical uses of the public API must pass
`mypy --strict` against the shipped stubs."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import llm_gateway
from llm_gateway.asgi import GatewayASGI
from llm_gateway.testing import MockUpstream

mock = MockUpstream({"force_status": 500}, port=0)
mock.set_behavior({"reply_text": "hi"})
seen: List[Dict[str, Any]] = mock.received()
gw = llm_gateway.Gateway({"providers": []}, redis_url=None, max_body_bytes=1 << 20)


@gw.on_usage
def on_usage(record: Dict[str, Any]) -> None:
    print(record["cost"])


async def main() -> bytes:
    resp = await gw.request("POST", "/v1/messages", headers={"x-api-key": "k"}, body={"a": 1})
    async for chunk in resp:
        print(len(chunk))
    status: int = resp.status
    ctype: str = resp.headers["content-type"]
    print(status, ctype, await resp.json())
    return await resp.read()


asyncio.run(main())
sync = gw.request_sync("GET", "/v1/models", headers=[(b"x-api-key", b"k")])
data: Any = sync.json()
for piece in sync:
    print(piece.decode())
with gw.serve("127.0.0.1", 0) as server:
    url: str = server.url
translated = llm_gateway.translate_request({"x": 1}, "openai-chat", "anthropic")
notes: List[str] = translated.notes
body: bytes = translated.body
tail: bytes = llm_gateway.StreamTranslator("anthropic", "gemini").finish()
app: GatewayASGI = gw.asgi()
try:
    llm_gateway.Gateway("gateway.toml")
except llm_gateway.ConfigError as e:
    code: str = e.code
    http_status: int = e.status
