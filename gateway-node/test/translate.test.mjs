// translateRequest / translateResponse: gateway-core's translation without a gateway.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DIALECTS, translateRequest, translateResponse } from '../index.mjs';

const anthropicRequest = {
  model: 'claude-sonnet-4-5',
  max_tokens: 100,
  system: 'Be brief.',
  messages: [{ role: 'user', content: 'Hello' }],
};

test('translateRequest: Anthropic → OpenAI chat', () => {
  const { body, notes } = translateRequest(anthropicRequest, 'anthropic', 'openai-chat');
  assert.equal(body.model, 'claude-sonnet-4-5');
  assert.deepEqual(body.messages[0], { role: 'system', content: 'Be brief.' });
  assert.equal(body.messages[1].role, 'user');
  assert.equal(JSON.stringify(body.messages[1].content).includes('Hello'), true);
  assert.ok(Array.isArray(notes));
});

test('translateRequest accepts JSON text and bytes alike', () => {
  const fromObject = translateRequest(anthropicRequest, 'anthropic', 'gemini');
  const fromText = translateRequest(JSON.stringify(anthropicRequest), 'anthropic', 'gemini');
  const fromBytes = translateRequest(new TextEncoder().encode(JSON.stringify(anthropicRequest)), 'anthropic', 'gemini');
  assert.deepEqual(fromText, fromObject);
  assert.deepEqual(fromBytes, fromObject);
  assert.ok(fromObject.body.contents, JSON.stringify(fromObject.body));
});

test('translateRequest: OpenAI chat → Responses and back keeps the conversation', () => {
  const chat = {
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'question' },
    ],
  };
  const responses = translateRequest(chat, 'openai-chat', 'openai-responses').body;
  assert.equal(responses.model, 'gpt-4o-mini');
  const back = translateRequest(responses, 'openai-responses', 'openai-chat').body;
  const texts = JSON.stringify(back.messages);
  assert.ok(texts.includes('sys') && texts.includes('question'), texts);
});

test('translateResponse: Anthropic message → OpenAI chat completion', () => {
  const message = {
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-5',
    content: [{ type: 'text', text: 'Hi!' }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: { input_tokens: 3, output_tokens: 2 },
  };
  const { body } = translateResponse(message, 'anthropic', 'openai-chat');
  assert.equal(body.object, 'chat.completion');
  assert.equal(body.choices[0].message.content, 'Hi!');
  assert.equal(body.choices[0].finish_reason, 'stop');
  assert.equal(body.usage.prompt_tokens, 3);
  assert.equal(body.usage.completion_tokens, 2);
});

test('translation errors: unknown dialects, unreadable bodies', () => {
  assert.deepEqual([...DIALECTS], ['anthropic', 'openai-chat', 'openai-responses', 'gemini']);
  assert.throws(() => translateRequest(anthropicRequest, 'anthropic', 'cohere'), /target must be one of/);
  assert.throws(() => translateRequest(anthropicRequest, 'openai', 'anthropic'), /source must be one of/);
  assert.throws(() => translateRequest('{not json', 'anthropic', 'openai-chat'), /cannot translate/);
  assert.throws(() => translateRequest({ messages: 'nope' }, 'anthropic', 'openai-chat'), /cannot translate/);
  assert.throws(() => translateResponse(undefined, 'anthropic', 'openai-chat'), /body is required/);
});
