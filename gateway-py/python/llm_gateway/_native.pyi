"""Type stubs of the Rust extension (gateway-py/src)."""

from __future__ import annotations

import os
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from .asgi import GatewayASGI

__version__: str

_HeaderText = Union[str, bytes]
Headers = Union[
    Mapping[str, _HeaderText], Mapping[bytes, _HeaderText], Iterable[Tuple[_HeaderText, _HeaderText]]
]
"""A mapping or (name, value) pairs; names and values as str, or bytes read as latin-1."""

Body = Union[bytes, bytearray, memoryview, str, Dict[str, Any], List[Any], None]
"""bytes-like and str are sent as they are; other values as JSON (content-type added)."""

UsageRecord = Dict[str, Any]
"""The canonical usage-record JSON (serde of gateway_core::usage::UsageRecord) as a dict."""

_F = TypeVar("_F", bound=Callable[[UsageRecord], Any])

class Gateway:
    """The gateway in-process.

    ``config`` is a TOML file path (str or os.PathLike), TOML text (a str containing a newline,
    ``=`` or ``[``), or a dict with the same keys as the server's TOML import. ``redis_url``
    shares routing state (session bindings, breakers, cooldowns) with other gateways.
    """

    def __init__(
        self,
        config: Union[str, os.PathLike[str], Mapping[str, Any]],
        *,
        redis_url: Optional[str] = None,
        redis_prefix: Optional[str] = None,
        max_body_bytes: Optional[int] = None,
        on_usage: Optional[Callable[[UsageRecord], Any]] = None,
    ) -> None: ...
    async def request(
        self, method: str, path: str, headers: Optional[Headers] = None, body: Body = None
    ) -> Response:
        """Sends one request; resolves when status and headers are known (the body streams)."""
    def request_sync(
        self, method: str, path: str, headers: Optional[Headers] = None, body: Body = None
    ) -> SyncResponse:
        """Blocking twin of :meth:`request`; the GIL is released while the gateway works."""
    def on_usage(self, callback: _F) -> _F:
        """Calls ``callback(record)`` for every usage record, on a dedicated thread."""
    def remove_usage_callback(self, callback: Callable[[UsageRecord], Any]) -> bool: ...
    def asgi(self) -> GatewayASGI:
        """An ASGI app serving this gateway (mountable in FastAPI/Starlette)."""
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Server:
        """Serves the gateway over HTTP on a background thread."""

class Response:
    """Response of ``await Gateway.request(...)``."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Dict[str, str]:
        """Lower-case names; repeated headers joined with ", "."""
    @property
    def header_list(self) -> List[Tuple[str, str]]: ...
    def header(self, name: str, default: Optional[str] = None) -> Optional[str]: ...
    async def read(self) -> bytes:
        """The whole body (kept: may be called again)."""
    async def json(self) -> Any: ...
    async def aclose(self) -> None:
        """Drops the rest of the body (the request is recorded as a client abort)."""
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def __anext__(self) -> bytes: ...
    async def __aenter__(self) -> Response: ...
    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...

class SyncResponse:
    """Response of ``Gateway.request_sync(...)``."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Dict[str, str]: ...
    @property
    def header_list(self) -> List[Tuple[str, str]]: ...
    def header(self, name: str, default: Optional[str] = None) -> Optional[str]: ...
    def read(self) -> bytes: ...
    def json(self) -> Any: ...
    def close(self) -> None: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...
    def __enter__(self) -> SyncResponse: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...

class Server:
    """An HTTP server started by :meth:`Gateway.serve`."""

    @property
    def url(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Server: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...

class MockUpstream:
    """Fake Anthropic/OpenAI/Responses/Gemini server; see llm_gateway.testing."""

    def __init__(
        self, behavior: Optional[Mapping[str, Any]] = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None: ...
    @property
    def url(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def behavior(self) -> Dict[str, Any]: ...
    def set_behavior(self, behavior: Mapping[str, Any]) -> None: ...
    def received(self) -> List[Dict[str, Any]]: ...
    def clear_received(self) -> None: ...
    def wait_for_requests(self, count: int, timeout: float = 5.0) -> List[Dict[str, Any]]: ...
    def stop(self) -> None: ...
    def __enter__(self) -> MockUpstream: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...

class Translation:
    @property
    def body(self) -> bytes: ...
    @property
    def notes(self) -> List[str]: ...
    def json(self) -> Any: ...

class StreamTranslator:
    def __init__(self, source: str, target: str) -> None: ...
    def push(self, chunk: bytes) -> bytes: ...
    def finish(self, error: Optional[str] = None) -> bytes: ...

def translate_request(body: Body, source: str, target: str) -> Translation:
    """Dialects: "anthropic", "openai-chat", "openai-responses", "gemini"."""

def translate_response(body: Body, source: str, target: str) -> Translation: ...
