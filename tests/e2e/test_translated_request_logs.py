"""Last (marked `final`): stop each translating gateway with SIGTERM (graceful shutdown flushes
the usage log) and compare its request log row for row with every response its clients saw.
"""

from __future__ import annotations

import pytest

from conftest import (
    CODEX_MODEL,
    GEMINI_MODEL,
    MOCK_TEXT,
    MODEL,
    OPENAI_MODEL,
    SHUTDOWN_LIMIT_S,
    Gateway,
    check_request_log,
)

GATEWAYS = ["claude_gateway", "gemini_gateway", "openai_compatible_gateway", "codex_gateway"]


def _one_foreign_request(name: str, gw: Gateway) -> None:
    """Makes sure the check has a translated request to look at even when run alone."""
    if name in ("claude_gateway", "gemini_gateway"):
        model = MODEL if name == "claude_gateway" else GEMINI_MODEL
        with gw.openai() as client:
            completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi."}])
        assert completion.choices[0].message.content == MOCK_TEXT
    else:
        model = OPENAI_MODEL if name == "openai_compatible_gateway" else CODEX_MODEL
        with gw.client() as client:
            message = client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "Hi."}])
        assert message.content[0].type == "text" and message.content[0].text == MOCK_TEXT


@pytest.mark.final
@pytest.mark.parametrize("name", GATEWAYS)
def test_request_log_matches_every_response(request: pytest.FixtureRequest, name: str) -> None:
    gw: Gateway = request.getfixturevalue(name)
    _one_foreign_request(name, gw)
    assert gw.stop() == 0, gw.process.logs()
    assert gw.process.stop_seconds is not None and gw.process.stop_seconds < SHUTDOWN_LIMIT_S
    check_request_log(gw)
