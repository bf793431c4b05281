"""The official `anthropic` Python SDK, unmodified, against gateways whose only provider is an
`openai-compatible` (chat completions) or a `codex` (responses) provider: Messages requests and
replies are translated both ways.

Every test runs once per provider type; each checks what the client sees and the gateway's
request log row (client dialect `anthropic`, forwarded model, tokens as billed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import anthropic
import pytest

from conftest import (
    CODEX_MODEL,
    INPUT_TOKENS,
    MOCK_TEXT,
    MODEL,
    OPENAI_MODEL,
    OUTPUT_TOKENS,
    Gateway,
    assert_billed_row,
)

DIALECT = "anthropic"
MESSAGES = [{"role": "user", "content": "Say hello."}]
QUESTION = [{"role": "user", "content": "What's the weather in Paris?"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
# The mock fills a tool input from the schema: strings "mock", an enum's first member.
EXPECTED_TOOL_INPUT = {"location": "mock", "unit": "celsius"}


@dataclass
class Served:
    """A gateway and the model its clients ask for."""

    gw: Gateway
    model: str
    client: anthropic.Anthropic

    def row(self, request_id: str | None, stream: bool) -> dict[str, Any]:
        return assert_billed_row(self.gw, request_id, dialect=DIALECT, model=self.model, stream=stream)


@pytest.fixture(params=["openai-compatible", "codex"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    provider_type = request.param
    gw: Gateway = request.getfixturevalue(f"{provider_type.replace('-', '_')}_gateway")
    model = OPENAI_MODEL if provider_type == "openai-compatible" else CODEX_MODEL
    with gw.client() as client:
        yield Served(gw, model, client)


def _text(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def _assert_usage(usage: anthropic.types.Usage) -> None:
    assert usage.input_tokens == INPUT_TOKENS
    assert usage.output_tokens == OUTPUT_TOKENS
    # OpenAI counts cached tokens inside the prompt; the mock reports none.
    assert usage.cache_read_input_tokens in (0, None)
    assert usage.cache_creation_input_tokens in (0, None)


def test_messages_create(served: Served) -> None:
    raw = served.client.messages.with_raw_response.create(
        model=served.model, max_tokens=64, system="Be brief.", messages=MESSAGES
    )
    message = raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert _text(message) == MOCK_TEXT
    assert message.stop_reason == "end_turn"
    _assert_usage(message.usage)
    served.row(raw.headers.get("x-request-id"), stream=False)


def test_messages_stream(served: Served) -> None:
    with served.client.messages.stream(model=served.model, max_tokens=64, messages=MESSAGES) as stream:
        request_id = stream.response.headers.get("x-request-id")
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2, f"expected the text in several deltas, got {pieces!r}"
    assert "".join(pieces) == MOCK_TEXT
    assert _text(final) == MOCK_TEXT
    assert final.stop_reason == "end_turn"
    _assert_usage(final.usage)
    served.row(request_id, stream=True)


def test_messages_stream_raw_events(served: Served) -> None:
    stream = served.client.messages.create(model=served.model, max_tokens=64, messages=MESSAGES, stream=True)
    with stream:
        request_id = stream.response.headers.get("x-request-id")
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start", kinds
    assert kinds[-1] == "message_stop", kinds
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1, kinds
    assert kinds.count("message_delta") == 1, kinds
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == OUTPUT_TOKENS
    served.row(request_id, stream=True)


def test_tool_use_round(served: Served) -> None:
    raw = served.client.messages.with_raw_response.create(
        model=served.model, max_tokens=256, tools=[WEATHER_TOOL], messages=QUESTION
    )
    first = raw.parse()
    assert first.stop_reason == "tool_use"
    tool_uses = [b for b in first.content if b.type == "tool_use"]
    assert len(tool_uses) == 1, first.content
    call = tool_uses[0]
    assert call.id
    assert call.name == "get_weather"
    assert call.input == EXPECTED_TOOL_INPUT
    _assert_usage(first.usage)
    served.row(raw.headers.get("x-request-id"), stream=False)

    follow_up = QUESTION + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}]},
    ]
    raw = served.client.messages.with_raw_response.create(
        model=served.model, max_tokens=256, tools=[WEATHER_TOOL], messages=follow_up
    )
    second = raw.parse()
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert _text(second) == MOCK_TEXT
    _assert_usage(second.usage)
    served.row(raw.headers.get("x-request-id"), stream=False)


def test_tool_use_round_streaming(served: Served) -> None:
    partial_json: list[str] = []
    with served.client.messages.stream(
        model=served.model, max_tokens=256, tools=[WEATHER_TOOL], messages=QUESTION
    ) as stream:
        request_id = stream.response.headers.get("x-request-id")
        for event in stream:
            if event.type == "input_json":
                partial_json.append(event.partial_json)
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    assert partial_json, "the tool input should arrive in input_json_delta events"
    assert json.loads("".join(partial_json)) == EXPECTED_TOOL_INPUT
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.id and call.name == "get_weather"
    assert call.input == EXPECTED_TOOL_INPUT
    _assert_usage(first.usage)
    served.row(request_id, stream=True)

    follow_up = QUESTION + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}]},
    ]
    with served.client.messages.stream(
        model=served.model, max_tokens=256, tools=[WEATHER_TOOL], messages=follow_up
    ) as stream:
        request_id = stream.response.headers.get("x-request-id")
        text = "".join(stream.text_stream)
        second = stream.get_final_message()
    assert text == MOCK_TEXT
    assert second.stop_reason == "end_turn"
    assert all(b.type == "text" for b in second.content)
    _assert_usage(second.usage)
    served.row(request_id, stream=True)


def test_models_list_is_the_providers(served: Served) -> None:
    ids = [m.id for m in served.client.models.list()]
    assert served.model in ids, ids
    assert "o3" in ids, f"the upstream lists o3 (unpriced, so not from the fallback list): {ids}"
    assert MODEL not in ids, f"{MODEL} is not served by a {served.gw.provider_type} provider: {ids}"


def test_count_tokens_is_answered_or_refused_for_good(served: Served) -> None:
    try:
        counted = served.client.messages.count_tokens(model=served.model, messages=MESSAGES)
    except anthropic.APIStatusError as e:
        assert 400 <= e.status_code < 500, f"{e.status_code}: {e.body}"
        assert e.status_code not in (408, 409, 429), f"{e.status_code} is retried by the SDK: {e.body}"
    else:
        assert counted.input_tokens > 0
