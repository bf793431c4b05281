"""Exceptions raised by llm_gateway.

Requests that the gateway refuses (bad key, malformed body, no provider, upstream failures) are
not exceptions: they come back as responses in the caller's API dialect, exactly as over HTTP.
Exceptions are for the Python API itself: a rejected configuration, an untranslatable body, a
response body that broke off or was already consumed.
"""

from __future__ import annotations

__all__ = ["GatewayError", "ConfigError", "TranslateError", "StreamError"]


class GatewayError(Exception):
    """Base class. ``status`` is the HTTP status the condition maps to, ``code`` a stable
    machine-readable name (e.g. ``invalid_config``, ``translate_error``, ``stream_consumed``)."""

    status: int
    code: str
    message: str

    def __init__(self, message: str, status: int = 500, code: str = "internal_error") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status}, code={self.code!r})"


class ConfigError(GatewayError, ValueError):
    """The configuration (TOML or dict) was rejected, or a Redis URL is invalid."""


class TranslateError(GatewayError, ValueError):
    """A body could not be translated between dialects (``status`` 400)."""


class StreamError(GatewayError):
    """A response body failed mid-way (``stream_error``), was already consumed by iteration
    (``stream_consumed``) or was closed (``stream_closed``)."""
