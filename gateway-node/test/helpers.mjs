// Shared fixtures: a mock upstream and a gateway configured in front of it.

import { Gateway, MockUpstream } from '../index.mjs';

export const ALICE_KEY = 'sk-alice-0001';

/** A config with one Anthropic provider (serving chat clients by translation) and one OpenAI-compatible provider. */
export function configFor(mockUrl) {
  return {
    providers: [
      {
        name: 'mock-claude',
        type: 'claude',
        base_url: mockUrl,
        api_key: 'sk-upstream-claude',
        translate_from: ['openai-responses', 'gemini'],
        max_retry_attempts: 1,
      },
      {
        name: 'mock-openai',
        type: 'openai-compatible',
        base_url: mockUrl,
        api_key: 'sk-upstream-openai',
        max_retry_attempts: 1,
      },
    ],
    users: [{ name: 'alice', keys: [{ name: 'laptop', key: ALICE_KEY }] }],
    prices: [
      { model: 'claude-sonnet-4-5', input_per_mtok: '3', output_per_mtok: '15' },
      { model: 'gpt-4o-mini', input_per_mtok: '0.15', output_per_mtok: '0.6' },
    ],
  };
}

/** A started mock and a gateway in front of it, with every usage record collected. */
export async function setup(behavior) {
  const mock = await MockUpstream.start({ behavior });
  const gw = new Gateway(configFor(mock.url));
  const records = [];
  gw.onUsage((r) => records.push(r));
  return { mock, gw, records };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `records` holds `n` records (or fails after `timeoutMs`). */
export async function waitForRecords(records, n, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (records.length < n) {
    if (Date.now() > deadline) {
      throw new Error(`expected ${n} usage records, got ${records.length}: ${JSON.stringify(records)}`);
    }
    await sleep(5);
  }
  return records;
}

export const anthropicBody = (extra = {}) => ({
  model: 'claude-sonnet-4-5',
  max_tokens: 64,
  messages: [{ role: 'user', content: 'Hello' }],
  ...extra,
});

export const anthropicHeaders = {
  'x-api-key': ALICE_KEY,
  'anthropic-version': '2023-06-01',
  'content-type': 'application/json',
};
