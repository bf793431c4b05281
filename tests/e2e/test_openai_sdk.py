"""The official `openai` Python SDK, unmodified, against gateways whose only provider is a
`claude` or a `gemini` provider: chat completions and responses are translated both ways.

Every test runs once per provider type; each checks what the client sees and the gateway's
request log row (client dialect, forwarded model, tokens as billed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import openai
import pytest

from conftest import (
    GEMINI_MODEL,
    INPUT_TOKENS,
    MOCK_TEXT,
    MODEL,
    OUTPUT_TOKENS,
    Gateway,
    assert_billed_row,
)

CHAT = "openai-chat"
RESPONSES = "openai-responses"
QUESTION = "What's the weather in Paris?"

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location"],
}
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": WEATHER_PARAMETERS,
        },
    }
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": WEATHER_PARAMETERS,
    }
]
# The mock fills a tool input from the schema: strings "mock", an enum's first member.
EXPECTED_TOOL_INPUT = {"location": "mock", "unit": "celsius"}
TOOL_RESULT = "18°C, sunny"


@dataclass
class Served:
    """A gateway and the model its clients ask for."""

    gw: Gateway
    model: str
    client: openai.OpenAI

    def last_request_id(self) -> str | None:
        """The x-request-id of the latest response (the SDK's stream helpers hide their response)."""
        return self.gw.ledger.seen[-1].request_id

    def row(self, request_id: str | None, dialect: str, stream: bool) -> dict[str, Any]:
        return assert_billed_row(self.gw, request_id, dialect=dialect, model=self.model, stream=stream)


@pytest.fixture(params=["claude", "gemini"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    provider_type = request.param
    gw: Gateway = request.getfixturevalue(f"{provider_type}_gateway")
    model = MODEL if provider_type == "claude" else GEMINI_MODEL
    with gw.openai() as client:
        yield Served(gw, model, client)


def _request_id(response: Any) -> str | None:
    return response.headers.get("x-request-id")


def _assert_chat_usage(usage: Any) -> None:
    assert usage is not None
    assert usage.prompt_tokens == INPUT_TOKENS
    assert usage.completion_tokens == OUTPUT_TOKENS
    assert usage.total_tokens == INPUT_TOKENS + OUTPUT_TOKENS
    if usage.prompt_tokens_details is not None:
        assert usage.prompt_tokens_details.cached_tokens in (0, None)


def _assert_responses_usage(usage: Any) -> None:
    assert usage is not None
    assert usage.input_tokens == INPUT_TOKENS
    assert usage.output_tokens == OUTPUT_TOKENS
    assert usage.total_tokens == INPUT_TOKENS + OUTPUT_TOKENS
    assert usage.input_tokens_details.cached_tokens in (0, None)


# --- chat completions ----------------------------------------------------------------------


def test_chat_create(served: Served) -> None:
    raw = served.client.chat.completions.with_raw_response.create(
        model=served.model, messages=[{"role": "user", "content": "Say hello."}]
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == MOCK_TEXT
    assert not choice.message.tool_calls
    assert choice.finish_reason == "stop"
    _assert_chat_usage(completion.usage)
    served.row(_request_id(raw), CHAT, stream=False)


def test_chat_stream_with_usage(served: Served) -> None:
    stream = served.client.chat.completions.create(
        model=served.model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        request_id = _request_id(stream.response)
        chunks = list(stream)
    assert chunks, "no chunks"
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1, "every chunk of one completion has the same id"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2, f"expected the text in several deltas, got {pieces!r}"
    assert "".join(pieces) == MOCK_TEXT
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # include_usage: one extra chunk, last, with empty choices and the usage of the whole request.
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1, with_usage
    assert with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    _assert_chat_usage(chunks[-1].usage)
    served.row(request_id, CHAT, stream=True)


def test_chat_stream_without_usage_option_is_plain(served: Served) -> None:
    stream = served.client.chat.completions.create(
        model=served.model, messages=[{"role": "user", "content": "Say hello."}], stream=True
    )
    with stream:
        request_id = _request_id(stream.response)
        chunks = list(stream)
    # The row is billed either way: the gateway gets usage from upstream regardless.
    served.row(request_id, CHAT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == MOCK_TEXT
    empty = [c for c in chunks if not c.choices]
    assert not empty, f"chunks with no choices although include_usage was not asked for: {empty}"
    assert all(c.usage is None for c in chunks)


def test_chat_tool_call_round(served: Served) -> None:
    question = [{"role": "user", "content": QUESTION}]
    raw = served.client.chat.completions.with_raw_response.create(
        model=served.model, messages=question, tools=CHAT_TOOLS
    )
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1, choice.message
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == EXPECTED_TOOL_INPUT
    _assert_chat_usage(first.usage)
    served.row(_request_id(raw), CHAT, stream=False)

    follow_up = question + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT},
    ]
    raw = served.client.chat.completions.with_raw_response.create(
        model=served.model, messages=follow_up, tools=CHAT_TOOLS
    )
    second = raw.parse()
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == MOCK_TEXT
    assert not second.choices[0].message.tool_calls
    _assert_chat_usage(second.usage)
    served.row(_request_id(raw), CHAT, stream=False)


def test_chat_tool_call_round_streaming(served: Served) -> None:
    question = [{"role": "user", "content": QUESTION}]
    stream = served.client.chat.completions.create(
        model=served.model,
        messages=question,
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        request_id = _request_id(stream.response)
        chunks = list(stream)
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas, "no tool call deltas"
    assert {d.index for d in deltas} == {0}
    head = deltas[0]
    assert head.id and head.type == "function" and head.function.name == "get_weather", head
    assert all(d.id is None for d in deltas[1:]), "only the first delta of a call carries its id"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == EXPECTED_TOOL_INPUT
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == []
    _assert_chat_usage(chunks[-1].usage)
    served.row(request_id, CHAT, stream=True)

    text_before = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    follow_up = question + [
        {
            "role": "assistant",
            "content": text_before or None,
            "tool_calls": [
                {"id": head.id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": head.id, "content": TOOL_RESULT},
    ]
    with served.client.chat.completions.stream(
        model=served.model, messages=follow_up, tools=CHAT_TOOLS, stream_options={"include_usage": True}
    ) as stream:
        request_id = served.last_request_id()
        for _ in stream:
            pass
        second = stream.get_final_completion()
    assert second.choices[0].message.content == MOCK_TEXT
    assert second.choices[0].finish_reason == "stop"
    assert not second.choices[0].message.tool_calls
    _assert_chat_usage(second.usage)
    served.row(request_id, CHAT, stream=True)


def test_models_list(served: Served) -> None:
    """The upstream's own list, in OpenAI's shape (the mock lists models nobody priced)."""
    page = served.client.models.list()
    ids = [m.id for m in page]
    assert served.model in ids, ids
    upstream_only = "claude-opus-4-1" if served.gw.provider_type == "claude" else "gemini-2.5-pro"
    assert upstream_only in ids, ids
    assert len(ids) == len(set(ids)), ids
    for model in page.data:
        assert model.object == "model", model


# --- responses -----------------------------------------------------------------------------


def test_responses_create(served: Served) -> None:
    raw = served.client.responses.with_raw_response.create(
        model=served.model, instructions="Be brief.", input="Say hello."
    )
    response = raw.parse()
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == MOCK_TEXT
    assert [item.type for item in response.output] == ["message"]
    _assert_responses_usage(response.usage)
    served.row(_request_id(raw), RESPONSES, stream=False)


def test_responses_stream(served: Served) -> None:
    stream = served.client.responses.create(model=served.model, input="Say hello.", stream=True)
    with stream:
        request_id = _request_id(stream.response)
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created", kinds
    assert kinds[-1] == "response.completed", kinds
    assert kinds.count("response.completed") == 1, kinds
    assert [e.sequence_number for e in events] == list(range(len(events))), "sequence numbers count up from 0"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2, kinds
    assert "".join(deltas) == MOCK_TEXT
    done = [e.text for e in events if e.type == "response.output_text.done"]
    assert done == [MOCK_TEXT]
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    finished = [e.item.id for e in events if e.type == "response.output_item.done"]
    assert added == finished and len(added) == 1, (added, finished)
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == MOCK_TEXT
    assert completed.id == events[0].response.id
    _assert_responses_usage(completed.usage)
    served.row(request_id, RESPONSES, stream=True)


def test_responses_function_call_round(served: Served) -> None:
    raw = served.client.responses.with_raw_response.create(
        model=served.model, input=QUESTION, tools=RESPONSES_TOOLS
    )
    first = raw.parse()
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather"
    assert call.call_id
    assert json.loads(call.arguments) == EXPECTED_TOOL_INPUT
    _assert_responses_usage(first.usage)
    served.row(_request_id(raw), RESPONSES, stream=False)

    follow_up = [
        {"role": "user", "content": QUESTION},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
    ]
    raw = served.client.responses.with_raw_response.create(
        model=served.model, input=follow_up, tools=RESPONSES_TOOLS
    )
    second = raw.parse()
    assert second.status == "completed"
    assert second.output_text == MOCK_TEXT
    assert not [item for item in second.output if item.type == "function_call"]
    _assert_responses_usage(second.usage)
    served.row(_request_id(raw), RESPONSES, stream=False)


def test_responses_function_call_round_streaming(served: Served) -> None:
    stream = served.client.responses.create(model=served.model, input=QUESTION, tools=RESPONSES_TOOLS, stream=True)
    with stream:
        request_id = _request_id(stream.response)
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.completed", kinds
    arg_deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    arg_done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    assert arg_deltas and len(arg_done) == 1, kinds
    assert json.loads("".join(arg_deltas)) == EXPECTED_TOOL_INPUT
    assert json.loads(arg_done[0]) == EXPECTED_TOOL_INPUT
    completed = events[-1].response
    calls = [item for item in completed.output if item.type == "function_call"]
    assert len(calls) == 1, completed.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments) == EXPECTED_TOOL_INPUT
    _assert_responses_usage(completed.usage)
    served.row(request_id, RESPONSES, stream=True)

    follow_up = [
        {"role": "user", "content": QUESTION},
        *[item.model_dump(exclude_none=True) for item in completed.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
    ]
    with served.client.responses.stream(model=served.model, input=follow_up, tools=RESPONSES_TOOLS) as stream:
        request_id = served.last_request_id()
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        second = stream.get_final_response()
    assert text == MOCK_TEXT
    assert second.output_text == MOCK_TEXT
    _assert_responses_usage(second.usage)
    served.row(request_id, RESPONSES, stream=True)
