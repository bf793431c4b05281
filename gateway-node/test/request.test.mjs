// The in-process API: Gateway construction, request(), streamed and whole bodies, cancellation,
// errors in the caller's dialect, and usage records.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

import { Gateway, MockUpstream } from '../index.mjs';
import { ALICE_KEY, anthropicBody, anthropicHeaders, setup, sleep, waitForRecords } from './helpers.mjs';

test('require() and import give the same API', () => {
  const cjs = createRequire(import.meta.url)('../index.js');
  assert.equal(cjs.Gateway, Gateway);
  assert.equal(typeof cjs.translateRequest, 'function');
});

test('non-stream request: status, headers, json(), one success record with cost', async () => {
  const { mock, gw, records } = await setup({ reply_text: 'Whole answer.', usage: { input_tokens: 100, output_tokens: 10 } });
  try {
    const resp = await gw.request({
      method: 'POST',
      path: '/v1/messages',
      headers: { ...anthropicHeaders, 'x-note': 'café', 'x-multi': ['a', 'b'] },
      body: anthropicBody(),
    });
    assert.equal(resp.status, 200);
    assert.ok(resp.ok);
    assert.match(resp.headers['content-type'], /^application\/json/);
    assert.ok(resp.headers['x-request-id']);
    const json = await resp.json();
    assert.equal(json.type, 'message');
    assert.equal(json.content[0].text, 'Whole answer.');
    assert.equal(resp.bodyUsed, true);
    await assert.rejects(resp.text(), /already read/);

    const [record] = await waitForRecords(records, 1);
    assert.equal(record.request_id, resp.headers['x-request-id']);
    assert.equal(record.outcome, 'success');
    assert.equal(record.provider_name, 'mock-claude');
    assert.equal(record.dialect, 'anthropic');
    assert.equal(record.stream, false);
    assert.deepEqual(record.usage, {
      input_tokens: 100,
      output_tokens: 10,
      cache_creation_input_tokens: 0,
      cache_creation_5m_input_tokens: 0,
      cache_creation_1h_input_tokens: 0,
      cache_read_input_tokens: 0,
    });
    // 100 × $3/M + 10 × $15/M = $0.00045 = 450,000 nano-dollars.
    assert.equal(record.cost, 450000);
    assert.equal(typeof record.created_at, 'string');
    assert.ok(Array.isArray(record.decision_chain) && record.decision_chain.length > 0);

    // The same answer read as an async iterable, and as bytes.
    const again = await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody() });
    const parts = [];
    for await (const chunk of again.body) parts.push(Buffer.from(chunk));
    assert.equal(JSON.parse(Buffer.concat(parts).toString('utf8')).content[0].text, 'Whole answer.');
    const bytes = await (await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody() })).bytes();
    assert.ok(bytes instanceof Uint8Array);
    assert.equal(JSON.parse(Buffer.from(bytes).toString('utf8')).type, 'message');

    // What the mock received: the provider's key, not the caller's; other headers as sent.
    const [seen] = mock.received();
    assert.equal(seen.path, '/v1/messages');
    assert.equal(seen.headers['x-api-key'], 'sk-upstream-claude');
    assert.equal(seen.headers['x-note'], 'café');
    assert.equal(seen.headers['x-multi'], 'a, b');
    assert.equal(JSON.parse(seen.body).model, 'claude-sonnet-4-5');
  } finally {
    await mock.stop();
  }
});

test('stream: chunks arrive as the upstream sends them, not at the end', async () => {
  const { mock, gw, records } = await setup({ chunks: 4, chunk_delay: 150, reply_text: 'one two three four' });
  try {
    const started = Date.now();
    const resp = await gw.request({
      path: '/v1/messages',
      headers: anthropicHeaders,
      body: anthropicBody({ stream: true }),
    });
    assert.equal(resp.status, 200);
    assert.match(resp.headers['content-type'], /^text\/event-stream/);
    const arrivals = [];
    let text = '';
    for await (const chunk of resp.body) {
      assert.ok(chunk instanceof Uint8Array);
      arrivals.push(Date.now() - started);
      text += Buffer.from(chunk).toString('utf8');
    }
    const total = Date.now() - started;
    assert.ok(arrivals.length >= 3, `expected several chunks, got ${arrivals.length}`);
    // Three 150 ms gaps between four deltas: the first chunk must not wait for them.
    assert.ok(total >= 400, `stream took ${total} ms`);
    assert.ok(arrivals[0] < total - 300, `first chunk at ${arrivals[0]} ms of ${total} ms: buffered`);
    assert.match(text, /event: message_stop/);
    const [record] = await waitForRecords(records, 1);
    assert.equal(record.stream, true);
    assert.equal(record.outcome, 'success');
    assert.ok(record.ttft_ms !== null);
  } finally {
    await mock.stop();
  }
});

test('leaving a stream early cancels it and records client_abort', async () => {
  const { mock, gw, records } = await setup({ chunks: 20, chunk_delay: 50 });
  try {
    const resp = await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody({ stream: true }) });
    let seen = 0;
    for await (const chunk of resp.body) {
      seen += chunk.length;
      if (seen > 0) break;
    }
    const [record] = await waitForRecords(records, 1);
    assert.equal(record.outcome, 'client_abort');
    assert.equal(record.status_code, 200);
  } finally {
    await mock.stop();
  }
});

test('cancel() before reading records client_abort', async () => {
  const { mock, gw, records } = await setup({ chunks: 10, chunk_delay: 50 });
  try {
    const resp = await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody({ stream: true }) });
    resp.cancel();
    const [record] = await waitForRecords(records, 1);
    assert.equal(record.outcome, 'client_abort');
    assert.equal(resp.bodyUsed, true);
  } finally {
    await mock.stop();
  }
});

test('gateway errors are responses in the caller dialect, each with a rejected record', async () => {
  const { mock, gw, records } = await setup();
  try {
    // No key: Anthropic error shape.
    let resp = await gw.request({ path: '/v1/messages', headers: { 'content-type': 'application/json' }, body: anthropicBody() });
    assert.equal(resp.status, 401);
    let json = await resp.json();
    assert.equal(json.type, 'error');
    assert.equal(json.error.type, 'authentication_error');

    // Wrong key on the OpenAI endpoint: OpenAI error shape.
    resp = await gw.request({
      path: '/v1/chat/completions',
      headers: { authorization: 'Bearer sk-nobody-000', 'content-type': 'application/json' },
      body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(resp.status, 401);
    json = await resp.json();
    assert.equal(typeof json.error.message, 'string');
    assert.equal(json.type, undefined);

    // Not an endpoint.
    resp = await gw.request({ method: 'GET', path: '/nope', headers: { 'x-api-key': ALICE_KEY } });
    assert.equal(resp.status, 404);
    await resp.text();

    // Malformed JSON body, with a valid key.
    resp = await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: '{"model": ' });
    assert.equal(resp.status, 400);
    assert.equal((await resp.json()).error.type, 'invalid_request_error');

    await waitForRecords(records, 4);
    assert.deepEqual(records.map((r) => [r.status_code, r.outcome]), [
      [401, 'rejected'],
      [401, 'rejected'],
      [404, 'rejected'],
      [400, 'rejected'],
    ]);
    assert.equal(mock.received().length, 0);
  } finally {
    await mock.stop();
  }
});

test('upstream client errors pass through; retryable ones end in 503 after the retries', async () => {
  const { mock, gw, records } = await setup({ force_status: 400 });
  try {
    let resp = await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody() });
    assert.equal(resp.status, 400);
    assert.equal((await resp.json()).error.type, 'invalid_request_error');
    let [record] = await waitForRecords(records, 1);
    assert.equal(record.outcome, 'upstream_error');
    assert.equal(record.status_code, 400);

    mock.setBehavior({ force_status: 429 });
    resp = await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody() });
    assert.equal(resp.status, 503);
    const json = await resp.json();
    assert.equal(json.error.type, 'overloaded_error');
    assert.match(json.error.message, /429/);
    record = (await waitForRecords(records, 2))[1];
    assert.equal(record.outcome, 'failed');
    assert.equal(record.status_code, 503);
    assert.deepEqual(
      record.decision_chain.filter((e) => e.event === 'attempt').map((e) => e.status),
      [429],
    );
  } finally {
    await mock.stop();
  }
});

test('a stream the upstream breaks ends with an error event and a failed record', async () => {
  const { mock, gw, records } = await setup({ chunks: 5, reset_after_events: 3 });
  try {
    const resp = await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody({ stream: true }) });
    assert.equal(resp.status, 200);
    const text = await resp.text();
    assert.match(text, /event: error/);
    const [record] = await waitForRecords(records, 1);
    assert.equal(record.outcome, 'failed');
  } finally {
    await mock.stop();
  }
});

test('invalid requests reject before reaching the gateway', async () => {
  const { mock, gw, records } = await setup();
  try {
    await assert.rejects(gw.request({ path: 'v1/messages' }), /path must start with/);
    await assert.rejects(gw.request({ method: 'BAD METHOD', path: '/v1/messages' }), /invalid HTTP method/);
    await assert.rejects(gw.request({ path: '/v1/messages', headers: { 'bad header': 'x' } }), /invalid header name/);
    await assert.rejects(gw.request({ path: '/v1/messages', headers: { 'x-ok': 'line\nbreak' } }), /invalid value/);
    await assert.rejects(gw.request({ path: '/v1/messages', headers: { 'x-ok': 'snow \u2603' } }), /invalid value/);
    await assert.rejects(gw.request(null), TypeError);
    await sleep(50);
    assert.equal(records.length, 0);
  } finally {
    await mock.stop();
  }
});

test('config as TOML text, TOML file and object; invalid configs throw with the reason', async () => {
  const mock = await MockUpstream.start();
  try {
    const toml = `
[[providers]]
name = "p"
type = "claude"
base_url = "${mock.url}"
api_key = "\${LLM_GATEWAY_TEST_UPSTREAM_KEY}"

[[users]]
name = "u"
[[users.keys]]
name = "k"
key = "sk-toml-00001"
`;
    process.env.LLM_GATEWAY_TEST_UPSTREAM_KEY = 'sk-from-env';
    const dir = mkdtempSync(path.join(tmpdir(), 'llm-gateway-'));
    const file = path.join(dir, 'gateway.toml');
    writeFileSync(file, toml);
    for (const config of [toml, file, new URL(`file://${file}`)]) {
      const gw = new Gateway(config);
      const resp = await gw.request({
        path: '/v1/messages',
        headers: { 'x-api-key': 'sk-toml-00001', 'content-type': 'application/json' },
        body: anthropicBody(),
      });
      assert.equal(resp.status, 200, await resp.text());
    }
    // ${VAR} was expanded from the environment.
    assert.equal(mock.received()[0].headers['x-api-key'], 'sk-from-env');

    assert.throws(() => new Gateway({ providers: [{ name: 'x', type: 'claude', base_url: mock.url, api_key: 'k', wieght: 2 }] }), /wieght/);
    assert.throws(() => new Gateway({ bogus: [] }), /bogus/);
    assert.throws(() => new Gateway('[[providers]]\nname = '), /TOML/);
    assert.throws(() => new Gateway(path.join(dir, 'missing.toml')), /cannot read config file/);
    assert.throws(() => new Gateway({ users: [{ name: 'u', keys: [{ name: 'k', key: 'short' }] }] }), /shorter than 8/);
    assert.throws(() => new Gateway(42), TypeError);
    assert.throws(() => new Gateway({}, { timezone: 'Mars/Olympus' }), /timezone/);
    assert.throws(() => new Gateway({}, { redisUrl: 'not a url' }), /redisUrl is not usable/);
    // null members are "not set", as a missing TOML key.
    assert.ok(new Gateway({ providers: [], users: null }));
  } finally {
    delete process.env.LLM_GATEWAY_TEST_UPSTREAM_KEY;
    await mock.stop();
  }
});

test('onUsage: several listeners, unsubscribe, a throwing listener does not stop the others', async () => {
  const mock = await MockUpstream.start();
  const { configFor } = await import('./helpers.mjs');
  const gw = new Gateway(configFor(mock.url));
  const a = [];
  const b = [];
  const warnings = [];
  const onWarning = (w) => warnings.push(String(w.message));
  process.on('warning', onWarning);
  try {
    gw.onUsage(() => {
      throw new Error('listener failure');
    });
    const offA = gw.onUsage((r) => a.push(r));
    gw.onUsage((r) => b.push(r));
    await (await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody() })).text();
    await waitForRecords(b, 1);
    assert.equal(a.length, 1);
    offA();
    await (await gw.request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody() })).text();
    await waitForRecords(b, 2);
    assert.equal(a.length, 1);
    assert.notEqual(b[0].request_id, b[1].request_id);
    await sleep(20);
    assert.ok(warnings.some((w) => w.includes('listener failure')), JSON.stringify(warnings));
    assert.throws(() => gw.onUsage('nope'), TypeError);
  } finally {
    process.off('warning', onWarning);
    await mock.stop();
  }
});

test('concurrent in-process requests each get their own answer and record', async () => {
  const { mock, gw, records } = await setup({ chunks: 3, chunk_delay: 10 });
  try {
    const n = 20;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        gw
          .request({ path: '/v1/messages', headers: anthropicHeaders, body: anthropicBody({ stream: i % 2 === 0 }) })
          .then(async (r) => [r.status, await r.text()]),
      ),
    );
    results.forEach(([status, text], i) => {
      assert.equal(status, 200);
      assert.match(text, i % 2 === 0 ? /event: message_stop/ : /"text":"Hello from the mock upstream\."/);
    });
    await waitForRecords(records, n);
    assert.equal(new Set(records.map((r) => r.request_id)).size, n);
    assert.ok(records.every((r) => r.outcome === 'success'));
  } finally {
    await mock.stop();
  }
});

test('MockUpstream: behaviour can be read and replaced; bad behaviour throws', async () => {
  const mock = await MockUpstream.start({ behavior: { reply_text: 'first', first_byte_delay: 5 } });
  try {
    assert.match(mock.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const b = mock.behavior();
    assert.equal(b.reply_text, 'first');
    assert.deepEqual(b.first_byte_delay, { secs: 0, nanos: 5000000 });
    assert.equal(b.chunks, 3);
    mock.setBehavior({ expected_api_key: 'sk-only-this' });
    assert.equal(mock.behavior().reply_text, 'Hello from the mock upstream.');
    const r = await fetch(`${mock.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'wrong', 'content-type': 'application/json' },
      body: JSON.stringify(anthropicBody()),
    });
    assert.equal(r.status, 401);
    assert.equal(mock.received().length, 1);
    mock.clearReceived();
    assert.equal(mock.received().length, 0);
    assert.throws(() => mock.setBehavior({ force_statuz: 500 }), /invalid mock behavior/);
    await assert.rejects(MockUpstream.start({ host: 'localhost' }), /IP address/);
  } finally {
    await mock.stop();
  }
});
