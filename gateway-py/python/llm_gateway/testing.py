"""Test helpers for code that uses llm_gateway: a fake upstream vendor server.

``MockUpstream`` speaks the Anthropic Messages, OpenAI Chat Completions, OpenAI Responses and
Gemini APIs on a loopback port (JSON and streams), records every request, and can be told to
fail (``{"force_status": 529}``), delay, cut streams, or report given token counts. Point a
provider's ``base_url`` at ``mock.url``.
"""

from __future__ import annotations

from ._native import MockUpstream

__all__ = ["MockUpstream"]
