"""The Python runner of the shared binding scenarios (scenarios/*.json at the repository root;
format in scenarios/README.md). Each scenario runs through `await gw.request(...)`: the same
exchange the Rust runner (gateway-core/tests/shared_scenarios.rs) checks against the core."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
from typing import Any, Dict, List, Optional, Tuple

import pytest

import llm_gateway
from llm_gateway.testing import MockUpstream

from conftest import Usage

SCENARIOS = pathlib.Path(__file__).resolve().parents[2] / "scenarios"
FILES = sorted(SCENARIOS.glob("*.json"))
SCENARIO_KEYS = {"name", "description", "config", "mock", "request", "expect"}
REQUEST_KEYS = {"method", "path", "headers", "body"}
EXPECT_KEYS = {"status", "headers", "json", "sse_events", "body_contains", "usage"}


def substitute(value: Any, mock_url: str) -> Any:
    if isinstance(value, str):
        return value.replace("{{mock_url}}", mock_url)
    if isinstance(value, list):
        return [substitute(v, mock_url) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, mock_url) for k, v in value.items()}
    return value


def subset_mismatch(expected: Any, actual: Any, path: str) -> Optional[str]:
    """Objects as subsets, arrays element-wise with equal length, numbers by value, else equal."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing (expected {value!r})"
            problem = subset_mismatch(value, actual[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected an array, got {actual!r}"
        if len(expected) != len(actual):
            return f"{path}: expected {len(expected)} elements, got {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            problem = subset_mismatch(e, a, f"{path}[{i}]")
            if problem:
                return problem
        return None
    numbers = (int, float)
    if (
        isinstance(expected, numbers)
        and isinstance(actual, numbers)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        return None if expected == actual else f"{path}: expected {expected!r}, got {actual!r}"
    if type(expected) is not type(actual) or expected != actual:
        return f"{path}: expected {expected!r}, got {actual!r}"
    return None


def sse_events(body: str) -> List[str]:
    events: List[str] = []
    for block in re.split(r"\r?\n\r?\n", body):
        name = None
        data: List[str] = []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                value = line[len("data:") :]
                data.append(value[1:] if value.startswith(" ") else value)
        if name is not None:
            events.append(name)
        elif data:
            payload = "\n".join(data)
            if payload.strip() == "[DONE]":
                events.append("[DONE]")
            else:
                try:
                    obj = json.loads(payload)
                except ValueError:
                    obj = None
                kind = obj.get("object") if isinstance(obj, dict) else None
                events.append(kind if isinstance(kind, str) else "")
    return events


def test_the_matchers_can_fail() -> None:
    actual = {"a": 1, "b": [1, {"c": "x", "d": 2}], "e": 2.5}
    assert subset_mismatch({"a": 1.0, "b": [1, {"c": "x"}]}, actual, "j") is None
    assert subset_mismatch({"a": 2}, actual, "j")
    assert subset_mismatch({"b": [1]}, actual, "j")
    assert subset_mismatch({"z": None}, actual, "j")
    assert subset_mismatch({"a": "1"}, actual, "j")
    assert subset_mismatch({"a": True}, {"a": 1}, "j")
    assert sse_events("event: a\ndata: {}\n\n: c\n\nevent: b\r\ndata: {}\r\n\r\n") == ["a", "b"]
    assert sse_events('data: {"object":"x"}\n\ndata: {"y":1}\n\ndata: [DONE]\n\n') == ["x", "", "[DONE]"]


def test_there_are_scenarios() -> None:
    assert len(FILES) >= 8, f"expected at least 8 scenarios in {SCENARIOS}"


async def run(gateway: llm_gateway.Gateway, request: Dict[str, Any]) -> Tuple[int, Dict[str, str], bytes]:
    body = json.dumps(request["body"]).encode() if "body" in request else None
    resp = await gateway.request(request["method"], request["path"], headers=request.get("headers", {}), body=body)
    chunks = [chunk async for chunk in resp]
    return resp.status, resp.headers, b"".join(chunks)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: pathlib.Path) -> None:
    scenario = json.loads(path.read_text())
    assert set(scenario) <= SCENARIO_KEYS, f"unknown keys {set(scenario) - SCENARIO_KEYS}"
    assert set(scenario["request"]) <= REQUEST_KEYS
    assert set(scenario["expect"]) <= EXPECT_KEYS
    assert scenario["name"] == path.stem
    expect = scenario["expect"]

    usage = Usage()
    with MockUpstream(scenario.get("mock")) as mock:
        gateway = llm_gateway.Gateway(substitute(scenario["config"], mock.url), on_usage=usage)
        status, headers, raw = asyncio.run(run(gateway, scenario["request"]))
        body = raw.decode("utf-8", errors="replace")
        records = usage.wait_exactly(1)

    problems: List[str] = []
    if status != expect["status"]:
        problems.append(f"status: expected {expect['status']}, got {status}")
    for name, prefix in expect.get("headers", {}).items():
        value = headers.get(name.lower())
        if value is None or not value.startswith(prefix):
            problems.append(f"header {name}: expected prefix {prefix!r}, got {value!r}")
    if "json" in expect:
        try:
            problem = subset_mismatch(expect["json"], json.loads(raw), "json")
        except ValueError as e:
            problem = f"json: body is not JSON: {e}"
        if problem:
            problems.append(problem)
    if "sse_events" in expect and sse_events(body) != expect["sse_events"]:
        problems.append(f"sse_events: expected {expect['sse_events']}, got {sse_events(body)}")
    for needle in expect.get("body_contains", []):
        if needle not in body:
            problems.append(f"body_contains: {needle!r} not in the body")
    if "usage" in expect:
        problem = subset_mismatch(expect["usage"], records[0], "usage")
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems) + f"\nstatus {status}, body:\n{body}\nusage: {records}"
