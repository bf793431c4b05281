"""`redis_url`: two gateways sharing routing state through Redis (CI starts one on 6379)."""

from __future__ import annotations

import socket
import uuid
from typing import Any, Dict

import pytest

import llm_gateway
from llm_gateway.testing import MockUpstream

from conftest import ANTHROPIC_HEADERS, KEY, MESSAGES, MODEL, Usage

REDIS = ("127.0.0.1", 6379)


def redis_reachable() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=0.5):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not redis_reachable(), reason="no Redis on 127.0.0.1:6379")


def two_provider_config(mock_url: str) -> Dict[str, Any]:
    # Two equal providers: without shared state, each gateway picks one at random per session.
    providers = [
        {"name": name, "type": "claude", "base_url": mock_url, "api_key": "upstream-secret"}
        for name in ("left", "right")
    ]
    return {"providers": providers, "users": [{"name": "alice", "keys": [{"name": "k", "key": KEY}]}]}


def test_session_bindings_are_shared_through_redis(mock: MockUpstream) -> None:
    prefix = f"gw-pytest-{uuid.uuid4().hex}:"
    usage_a, usage_b = Usage(), Usage()
    a = llm_gateway.Gateway(two_provider_config(mock.url), redis_url="redis://127.0.0.1:6379",
                            redis_prefix=prefix, on_usage=usage_a)
    b = llm_gateway.Gateway(two_provider_config(mock.url), redis_url="redis://127.0.0.1:6379",
                            redis_prefix=prefix, on_usage=usage_b)
    body = {"model": MODEL, "max_tokens": 16, "messages": MESSAGES}
    sessions = [f"session-{i}" for i in range(12)]
    for s in sessions:
        assert a.request_sync("POST", "/v1/messages", headers={**ANTHROPIC_HEADERS, "x-session-id": s}, body=body).status == 200
    for s in sessions:
        assert b.request_sync("POST", "/v1/messages", headers={**ANTHROPIC_HEADERS, "x-session-id": s}, body=body).status == 200
    chosen_a = [r["provider_name"] for r in usage_a.wait_exactly(len(sessions))]
    records_b = usage_b.wait_exactly(len(sessions))
    # Gateway b found every session bound by gateway a (1 in 4096 to happen by chance).
    assert [r["provider_name"] for r in records_b] == chosen_a
    assert all(r["decision_chain"][0]["method"] == "session_reuse" for r in records_b)
