// The official `@anthropic-ai/sdk` and `openai` clients against a gateway reachable at a base
// URL (started with serve(), or node:http / Express / Fastify with handler()).

import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

import { ALICE_KEY, waitForRecords } from './helpers.mjs';

/** Runs every SDK check against `baseUrl`; `records` collects the gateway's usage records. */
export async function sdkChecks(t, baseUrl, records, mock) {
  const anthropic = new Anthropic({ baseURL: baseUrl, apiKey: ALICE_KEY, maxRetries: 0 });
  const openai = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: ALICE_KEY, maxRetries: 0 });

  await t.test('anthropic messages.create', async () => {
    const before = records.length;
    const msg = await anthropic.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Hello' }],
    });
    assert.equal(msg.type, 'message');
    assert.equal(msg.content[0].text, 'Hello from the mock upstream.');
    assert.equal(msg.usage.output_tokens, 15);
    const record = (await waitForRecords(records, before + 1))[before];
    assert.equal(record.outcome, 'success');
    assert.equal(record.stream, false);
    assert.match(record.user_agent, /Anthropic/i);
  });

  await t.test('anthropic messages.stream (SSE, chunk by chunk)', async () => {
    mock.setBehavior({ chunks: 4, chunk_delay: 40, reply_text: 'Streaming through the gateway' });
    const before = records.length;
    const stream = anthropic.messages.stream({
      model: 'claude-sonnet-4-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Tell me' }],
    });
    const deltas = [];
    const times = [];
    const started = Date.now();
    stream.on('text', (delta) => {
      deltas.push(delta);
      times.push(Date.now() - started);
    });
    const final = await stream.finalMessage();
    mock.setBehavior({});
    assert.equal(final.content[0].text, 'Streaming through the gateway');
    assert.equal(deltas.join(''), 'Streaming through the gateway');
    assert.ok(deltas.length >= 3, `deltas: ${JSON.stringify(deltas)}`);
    // 40 ms between deltas upstream: they must reach the SDK spread out, not in one burst.
    assert.ok(times[times.length - 1] - times[0] >= 80, `delta times ${times}`);
    const record = (await waitForRecords(records, before + 1))[before];
    assert.equal(record.stream, true);
    assert.equal(record.outcome, 'success');
    assert.equal(record.usage.output_tokens, 15);
  });

  await t.test('anthropic error: wrong key → AuthenticationError', async () => {
    const before = records.length;
    const bad = new Anthropic({ baseURL: baseUrl, apiKey: 'sk-wrong-0000', maxRetries: 0 });
    await assert.rejects(
      bad.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
      (err) => err instanceof Anthropic.AuthenticationError && err.status === 401,
    );
    const record = (await waitForRecords(records, before + 1))[before];
    assert.equal(record.outcome, 'rejected');
  });

  await t.test('openai chat.completions.create', async () => {
    const before = records.length;
    const completion = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Hello' }],
    });
    assert.equal(completion.object, 'chat.completion');
    assert.equal(completion.choices[0].message.content, 'Hello from the mock upstream.');
    const record = (await waitForRecords(records, before + 1))[before];
    assert.equal(record.dialect, 'openai-chat');
    assert.equal(record.provider_name, 'mock-openai');
    assert.equal(record.outcome, 'success');
    assert.ok(record.cost > 0);
  });

  await t.test('openai chat.completions stream', async () => {
    const before = records.length;
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Hello' }],
      stream: true,
    });
    let text = '';
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.equal(text, 'Hello from the mock upstream.');
    assert.ok(chunks >= 3);
    const record = (await waitForRecords(records, before + 1))[before];
    assert.equal(record.stream, true);
    assert.equal(record.outcome, 'success');
    // The gateway asked the upstream for a usage chunk, so the stream is metered.
    assert.equal(record.usage.output_tokens, 15);
  });

  await t.test('openai responses.create stream, translated to the Anthropic provider', async () => {
    const before = records.length;
    const stream = await openai.responses.create({ model: 'claude-sonnet-4-5', input: 'Hello', stream: true });
    let text = '';
    let completed;
    for await (const event of stream) {
      if (event.type === 'response.output_text.delta') text += event.delta;
      if (event.type === 'response.completed') completed = event.response;
    }
    assert.equal(text, 'Hello from the mock upstream.');
    assert.equal(completed.status, 'completed');
    const record = (await waitForRecords(records, before + 1))[before];
    assert.equal(record.dialect, 'openai-responses');
    assert.equal(record.provider_name, 'mock-claude');
  });

  await t.test('openai error: upstream 500s end in a 503 APIError after the retries', async () => {
    mock.setBehavior({ force_status: 500 });
    const before = records.length;
    try {
      await assert.rejects(
        openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }),
        (err) => err instanceof OpenAI.APIError && err.status === 503,
      );
    } finally {
      mock.setBehavior({});
    }
    const record = (await waitForRecords(records, before + 1))[before];
    assert.equal(record.status_code, 503);
    assert.equal(record.outcome, 'failed');
  });
}
