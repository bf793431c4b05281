"""An ASGI adapter for the in-process gateway: ``gw.asgi()``.

Mount it in FastAPI or Starlette (``app.mount("/llm", gw.asgi())``) or serve it alone with any
ASGI server. The request body is read whole (the gateway needs it whole anyway, to resend it on
failover); the response body is passed on chunk by chunk as the gateway produces it, so streams
stream. Only type conversion happens here: routing, auth, translation and usage are the core's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, MutableMapping, Tuple
from urllib.parse import quote

if TYPE_CHECKING:
    from ._native import Gateway

__all__ = ["GatewayASGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Characters left as they are when the decoded ASGI path is turned back into a request target
# (RFC 3986 pchar plus "/"); Gemini's "models/x:generateContent" keeps its colon.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _route_path(scope: Scope) -> str:
    """The path below the mount point: servers and frameworks differ on whether ``path``
    still includes ``root_path`` (Starlette's Mount keeps it since 0.33), so strip it if so."""
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    if root and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")) :] or "/"
    return path


def _header_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


class GatewayASGI:
    """ASGI 3 application serving one :class:`llm_gateway.Gateway`."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            # WebSockets are not part of any LLM API the gateway serves.
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return

        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.request":
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            elif message["type"] == "http.disconnect":
                return

        target = quote(_route_path(scope), safe=_PATH_SAFE)
        query: bytes = scope.get("query_string") or b""
        if query:
            target += "?" + query.decode("latin-1")
        headers: List[Tuple[bytes, bytes]] = list(scope.get("headers") or [])
        response = await self.gateway.request(scope["method"], target, headers=headers, body=bytes(body))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(_header_bytes(k), _header_bytes(v)) for k, v in response.header_list],
                }
            )
            async for chunk in response:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            # A client gone mid-stream makes `send` raise: dropping the body here records the
            # request as a client abort, with the usage counted so far.
            await response.aclose()

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def __repr__(self) -> str:
        return f"<GatewayASGI {self.gateway!r}>"
