"""Limits as the official SDKs see them: the refusal is the vendor's own error class, with the
limit named in the body, `Retry-After`/`X-RateLimit-*` headers, and a log row."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from conftest import MODEL, Gateway

MESSAGES = [{"role": "user", "content": "Say hello."}]


def test_anthropic_sdk_gets_rate_limit_error_past_rpm(rpm_gateway: Gateway) -> None:
    client = rpm_gateway.client()
    for _ in range(2):
        assert client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES).content
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    err = caught.value
    assert err.status_code == 429
    body = err.body["error"]
    assert body["type"] == "rate_limit_error"
    assert body["limit_type"] == "rpm"
    assert (body["current"], body["limit"]) == ("2", "2")
    headers = err.response.headers
    assert headers["x-ratelimit-limit"] == "2"
    assert headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(headers["retry-after"]) <= 60
    # Streaming requests are refused the same way, before any stream begins.
    with pytest.raises(anthropic.RateLimitError):
        with client.messages.stream(model=MODEL, max_tokens=16, messages=MESSAGES) as stream:
            stream.get_final_message()
    row = rpm_gateway.wait_row(headers["x-request-id"])
    assert (row["status_code"], row["outcome"]) == (429, "rejected")


def test_openai_sdk_gets_402_past_a_spend_limit(budget_gateway: Gateway) -> None:
    client = budget_gateway.openai()
    first = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert first.choices[0].message.content
    # Spend is added when the request's record is made, just after the body ends.
    deadline = time.monotonic() + 5
    while True:
        try:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        except openai.APIStatusError as e:
            err = e
            break
        assert time.monotonic() < deadline, "the spend limit never applied"
        time.sleep(0.05)
    assert err.status_code == 402
    assert err.code == "quota_exceeded"
    assert err.type == "insufficient_quota"
    body = err.body.get("error", err.body)  # the SDK hands over the inner error object
    assert body["limit_type"] == "usd_total"
    assert body["limit"] == "0.0001"
    assert body["current"] == "0.0003"
    assert "retry-after" not in err.response.headers, "a total never resets by itself"
    row = budget_gateway.wait_row(err.response.headers["x-request-id"])
    assert (row["status_code"], row["outcome"]) == (402, "rejected")
