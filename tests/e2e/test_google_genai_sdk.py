"""The official `google-genai` Python SDK (Gemini API), unmodified, against a gateway whose only
provider is a `claude` provider: generateContent requests and replies are translated both ways.

google-genai 3.x posts to `{base_url}/v1/models/{model}:generateContent` by default (its
`api_version` is `v1`); `HttpOptions(api_version="v1beta")` gives `/v1beta/models/...`, the
path of older SDKs and of most other Gemini clients. The gateway serves both.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from conftest import INPUT_TOKENS, MOCK_TEXT, MODEL, OUTPUT_TOKENS, Gateway, assert_billed_row

DIALECT = "gemini"
QUESTION = "What's the weather in Paris?"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather for a city.",
    parameters_json_schema={
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
)
# Function calls are answered by this test, not by the SDK calling Python functions.
TOOL_CONFIG = types.GenerateContentConfig(
    tools=[types.Tool(function_declarations=[WEATHER])],
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
)
# The mock fills a tool input from the schema: strings "mock", an enum's first member.
EXPECTED_TOOL_INPUT = {"location": "mock", "unit": "celsius"}


@pytest.fixture(params=[None, "v1beta"], ids=["v1", "v1beta"])
def api_version(request: pytest.FixtureRequest) -> str:
    return request.param or "v1"


@pytest.fixture
def client(claude_gateway: Gateway, api_version: str) -> Iterator[genai.Client]:
    # `None` keeps the SDK default, which must be v1 for the test ids to mean what they say.
    c = claude_gateway.genai(api_version=None if api_version == "v1" else api_version)
    try:
        yield c
    finally:
        c.close()


def _request_id(response: types.GenerateContentResponse) -> str | None:
    assert response.sdk_http_response is not None and response.sdk_http_response.headers is not None
    return response.sdk_http_response.headers.get("x-request-id")


def _assert_usage(usage: types.GenerateContentResponseUsageMetadata | None) -> None:
    assert usage is not None
    assert usage.prompt_token_count == INPUT_TOKENS
    assert usage.candidates_token_count == OUTPUT_TOKENS
    assert usage.total_token_count == INPUT_TOKENS + OUTPUT_TOKENS
    assert usage.cached_content_token_count in (0, None)


def _row(gw: Gateway, request_id: str | None, api_version: str, stream: bool) -> dict[str, Any]:
    method = "streamGenerateContent" if stream else "generateContent"
    return assert_billed_row(
        gw,
        request_id,
        dialect=DIALECT,
        model=MODEL,
        stream=stream,
        endpoint=f"/{api_version}/models/{MODEL}:{method}",
    )


def test_generate_content(client: genai.Client, claude_gateway: Gateway, api_version: str) -> None:
    response = client.models.generate_content(
        model=MODEL,
        contents="Say hello.",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=256),
    )
    assert response.text == MOCK_TEXT
    assert response.candidates and len(response.candidates) == 1
    candidate = response.candidates[0]
    assert candidate.content is not None and candidate.content.role == "model"
    assert candidate.finish_reason == types.FinishReason.STOP
    assert not response.function_calls
    _assert_usage(response.usage_metadata)
    _row(claude_gateway, _request_id(response), api_version, stream=False)


def test_generate_content_stream(client: genai.Client, claude_gateway: Gateway, api_version: str) -> None:
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Say hello."))
    assert chunks, "no chunks"
    pieces = [c.text for c in chunks if c.text]
    assert len(pieces) >= 2, f"expected the text in several chunks, got {pieces!r}"
    assert "".join(pieces) == MOCK_TEXT
    finishes = [cand.finish_reason for c in chunks for cand in (c.candidates or []) if cand.finish_reason]
    assert finishes == [types.FinishReason.STOP]
    # Gemini repeats the running usage in chunks; the last one holds the totals.
    _assert_usage(chunks[-1].usage_metadata)
    request_ids = {_request_id(c) for c in chunks}
    assert len(request_ids) == 1, request_ids
    _row(claude_gateway, request_ids.pop(), api_version, stream=True)


def test_function_calling_round(client: genai.Client, claude_gateway: Gateway, api_version: str) -> None:
    contents: list[types.Content] = [types.Content(role="user", parts=[types.Part(text=QUESTION)])]
    first = client.models.generate_content(model=MODEL, contents=contents, config=TOOL_CONFIG)
    calls = first.function_calls
    assert calls and len(calls) == 1, first
    assert calls[0].name == "get_weather"
    assert calls[0].args == EXPECTED_TOOL_INPUT
    _assert_usage(first.usage_metadata)
    _row(claude_gateway, _request_id(first), api_version, stream=False)

    assert first.candidates and first.candidates[0].content is not None
    contents += [
        first.candidates[0].content,
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"result": "18°C, sunny"})],
        ),
    ]
    second = client.models.generate_content(model=MODEL, contents=contents, config=TOOL_CONFIG)
    assert second.text == MOCK_TEXT
    assert not second.function_calls
    assert second.candidates and second.candidates[0].finish_reason == types.FinishReason.STOP
    _assert_usage(second.usage_metadata)
    _row(claude_gateway, _request_id(second), api_version, stream=False)


def test_function_calling_round_streaming(
    client: genai.Client, claude_gateway: Gateway, api_version: str
) -> None:
    contents: list[types.Content] = [types.Content(role="user", parts=[types.Part(text=QUESTION)])]
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=contents, config=TOOL_CONFIG))
    calls = [call for c in chunks for call in (c.function_calls or [])]
    assert len(calls) == 1, chunks
    assert calls[0].name == "get_weather"
    assert calls[0].args == EXPECTED_TOOL_INPUT
    _assert_usage(chunks[-1].usage_metadata)
    _row(claude_gateway, _request_id(chunks[0]), api_version, stream=True)

    model_parts = [
        p for c in chunks for cand in (c.candidates or []) if cand.content for p in (cand.content.parts or [])
    ]
    contents += [
        types.Content(role="model", parts=model_parts),
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"result": "18°C, sunny"})],
        ),
    ]
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=contents, config=TOOL_CONFIG))
    assert "".join(c.text or "" for c in chunks) == MOCK_TEXT
    assert not [call for c in chunks for call in (c.function_calls or [])]
    _assert_usage(chunks[-1].usage_metadata)
    _row(claude_gateway, _request_id(chunks[0]), api_version, stream=True)


def test_models_list(client: genai.Client) -> None:
    """The Claude upstream's own list (the mock lists models nobody priced), in Gemini's shape."""
    names = [m.name for m in client.models.list()]
    assert f"models/{MODEL}" in names, names
    assert "models/claude-opus-4-1" in names, names


def test_count_tokens_is_answered_or_refused_for_good(client: genai.Client) -> None:
    try:
        counted = client.models.count_tokens(model=MODEL, contents="Say hello.")
    except genai_errors.APIError as e:
        assert 400 <= e.code < 500, f"{e.code}: {e.details}"
        assert e.code not in (408, 429), f"{e.code} is retried by the SDK: {e.details}"
    else:
        assert counted.total_tokens and counted.total_tokens > 0, counted
