"""llm_gateway: the LLM gateway in-process.

>>> import llm_gateway
>>> gw = llm_gateway.Gateway("gateway.toml")            # doctest: +SKIP
>>> resp = gw.request_sync("POST", "/v1/messages", headers={...}, body={...})  # doctest: +SKIP

See the README's "Python" section for the whole API.
"""

from __future__ import annotations

from ._native import (
    Gateway,
    Response,
    Server,
    StreamTranslator,
    SyncResponse,
    Translation,
    __version__,
    translate_request,
    translate_response,
)
from .errors import ConfigError, GatewayError, StreamError, TranslateError

__all__ = [
    "Gateway",
    "Response",
    "SyncResponse",
    "Server",
    "Translation",
    "StreamTranslator",
    "translate_request",
    "translate_response",
    "GatewayError",
    "ConfigError",
    "TranslateError",
    "StreamError",
    "__version__",
]
