"""`translate_request`, `translate_response` and `StreamTranslator` (gateway_core::translate)."""

from __future__ import annotations

import json

import pytest

import llm_gateway

CHAT_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ],
}


def test_translate_request_chat_to_anthropic() -> None:
    t = llm_gateway.translate_request(CHAT_REQUEST, "openai-chat", "anthropic")
    body = t.json()
    assert body["model"] == "claude-sonnet-4-5"
    assert body["max_tokens"] == 100
    # Chat's system message becomes Anthropic's top-level system prompt.
    assert "Be brief." in json.dumps(body["system"])
    [message] = body["messages"]
    assert message["role"] == "user" and "Hello" in json.dumps(message["content"])
    assert json.loads(t.body) == body
    assert isinstance(t.notes, list)


def test_translate_request_accepts_bytes_and_underscored_names() -> None:
    raw = json.dumps(CHAT_REQUEST).encode()
    t = llm_gateway.translate_request(raw, "openai_chat", "gemini")
    assert t.json()["contents"][0]["parts"][0]["text"] == "Hello"


def test_translate_response_anthropic_to_chat() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hi there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    t = llm_gateway.translate_response(message, "anthropic", "openai-chat")
    body = t.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hi there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 10


def test_stream_translator_anthropic_to_chat() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                               "model": "m", "content": [], "stop_reason": None,
                                                               "usage": {"input_tokens": 5, "output_tokens": 0}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    sse = b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)
    tr = llm_gateway.StreamTranslator("anthropic", "openai-chat")
    # Fed in awkward pieces: events complete across chunk boundaries.
    out = b"".join(tr.push(sse[i : i + 7]) for i in range(0, len(sse), 7)) + tr.finish()
    text = out.decode()
    assert text.rstrip().endswith("data: [DONE]")
    content = ""
    for line in text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[len("data: ") :])
            for choice in chunk.get("choices", []):
                content += choice.get("delta", {}).get("content") or ""
    assert content == "Hello"


def test_translation_errors() -> None:
    with pytest.raises(ValueError, match="unknown dialect"):
        llm_gateway.translate_request(CHAT_REQUEST, "klingon", "anthropic")
    with pytest.raises(llm_gateway.TranslateError) as err:
        llm_gateway.translate_request(b"{not json", "openai-chat", "anthropic")
    assert err.value.status == 400 and err.value.code == "translate_error"
    with pytest.raises(llm_gateway.TranslateError):
        llm_gateway.translate_response(b"[]", "gemini", "anthropic")
