"""Shared fixtures: a mock upstream, gateways configured against it, and usage collection."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import llm_gateway
from llm_gateway.testing import MockUpstream

KEY = "sk-alice-0001"
MODEL = "claude-sonnet-4-5"
CHAT_MODEL = "gpt-4.1"
MOCK_TEXT = "Hello from the mock upstream."
INPUT_TOKENS = 25
OUTPUT_TOKENS = 15
# 25 × $3/M + 15 × $15/M = $0.0003, in nano-dollars.
CLAUDE_COST_NANOS = 300_000

ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MESSAGES = [{"role": "user", "content": "Hello"}]


def config(mock_url: str, **provider: Any) -> Dict[str, Any]:
    """A dict config: one claude provider on the mock (overridable), alice's key, two prices."""
    p: Dict[str, Any] = {
        "name": "claude-main",
        "type": "claude",
        "base_url": mock_url,
        "api_key": "upstream-secret",
    }
    p.update(provider)
    return {
        "providers": [p],
        "users": [{"name": "alice", "keys": [{"name": "laptop", "key": KEY}]}],
        "prices": [
            {"model": MODEL, "input_per_mtok": "3", "output_per_mtok": "15"},
            {"model": CHAT_MODEL, "input_per_mtok": "2", "output_per_mtok": "8"},
        ],
    }


class Usage:
    """Collects usage records from `on_usage` (called on the binding's own thread)."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []
        self.threads: List[str] = []
        self._cond = threading.Condition()

    def __call__(self, record: Dict[str, Any]) -> None:
        with self._cond:
            self.records.append(record)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.records) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} usage records, got {len(self.records)}")
                self._cond.wait(left)
            return list(self.records)

    def wait_exactly(self, count: int, settle: float = 0.1) -> List[Dict[str, Any]]:
        records = self.wait(count)
        time.sleep(settle)
        assert len(self.records) == count, f"expected exactly {count} records, got {len(self.records)}"
        return records


@pytest.fixture
def mock() -> Iterator[MockUpstream]:
    with MockUpstream() as m:
        yield m


@pytest.fixture
def usage() -> Usage:
    return Usage()


@pytest.fixture
def make_gateway(mock: MockUpstream, usage: Usage) -> Callable[..., llm_gateway.Gateway]:
    def make(cfg: Optional[Dict[str, Any]] = None, **provider: Any) -> llm_gateway.Gateway:
        gw = llm_gateway.Gateway(cfg if cfg is not None else config(mock.url, **provider))
        gw.on_usage(usage)
        return gw

    return make


@pytest.fixture
def gateway(make_gateway: Callable[..., llm_gateway.Gateway]) -> llm_gateway.Gateway:
    return make_gateway()
