"""The official `anthropic` and `openai` SDKs, unmodified, against `gw.serve()`."""

from __future__ import annotations

from typing import Callable, Iterator

import anthropic
import httpx
import openai
import pytest

import llm_gateway
from llm_gateway.testing import MockUpstream

from conftest import CHAT_MODEL, INPUT_TOKENS, KEY, MESSAGES, MOCK_TEXT, MODEL, OUTPUT_TOKENS, Usage, config


@pytest.fixture
def server(gateway: llm_gateway.Gateway) -> Iterator[llm_gateway.Server]:
    with gateway.serve() as srv:
        yield srv


def test_server_url_and_close(gateway: llm_gateway.Gateway) -> None:
    srv = gateway.serve("127.0.0.1", 0)
    assert srv.url == f"http://127.0.0.1:{srv.port}" and srv.host == "127.0.0.1"
    assert httpx.post(f"{srv.url}/v1/messages", headers={"x-api-key": "sk-nobody-0000"}, json={}).status_code == 401
    srv.close()
    srv.close()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{srv.url}/v1/messages", json={}, timeout=2)


def test_serve_on_a_taken_port_is_an_oserror(server: llm_gateway.Server, gateway: llm_gateway.Gateway) -> None:
    with pytest.raises(OSError):
        gateway.serve("127.0.0.1", server.port)


def test_anthropic_sdk_create_and_stream(server: llm_gateway.Server, usage: Usage) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)
    message = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == MOCK_TEXT
    assert message.usage.input_tokens == INPUT_TOKENS

    with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == MOCK_TEXT
    assert final.usage.output_tokens == OUTPUT_TOKENS

    records = usage.wait_exactly(2)
    assert [r["stream"] for r in records] == [False, True]
    assert all(r["outcome"] == "success" and r["dialect"] == "anthropic" for r in records)


def test_anthropic_sdk_sees_errors_as_its_own_exceptions(server: llm_gateway.Server) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-nobody-0000", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert err.value.status_code == 401


def test_openai_sdk_chat_stream_with_usage(
    mock: MockUpstream, make_gateway: Callable[..., llm_gateway.Gateway], usage: Usage
) -> None:
    gw = make_gateway(config(mock.url, name="openai-main", type="openai-compatible"))
    with gw.serve() as srv:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        text = ""
        last_usage = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage is not None:
                last_usage = chunk.usage
        assert text == MOCK_TEXT
        assert last_usage is not None and last_usage.prompt_tokens == INPUT_TOKENS

        completion = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)
        assert completion.choices[0].message.content == MOCK_TEXT
    records = usage.wait_exactly(2)
    assert [r["dialect"] for r in records] == ["openai-chat", "openai-chat"]
    assert records[0]["usage"]["output_tokens"] == OUTPUT_TOKENS


def test_openai_sdk_translated_to_a_claude_provider(
    mock: MockUpstream, make_gateway: Callable[..., llm_gateway.Gateway], usage: Usage
) -> None:
    gw = make_gateway(config(mock.url, translate_from=["openai-chat", "openai-responses"]))
    with gw.serve() as srv:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0)
        completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert completion.choices[0].message.content == MOCK_TEXT
        response = client.responses.create(model=MODEL, input="Hello")
        assert response.output_text == MOCK_TEXT
    # The upstream spoke Anthropic both times.
    assert [r["path"] for r in mock.received()] == ["/v1/messages", "/v1/messages"]
    records = usage.wait_exactly(2)
    assert [r["dialect"] for r in records] == ["openai-chat", "openai-responses"]
    assert all(r["provider_name"] == "claude-main" for r in records)
