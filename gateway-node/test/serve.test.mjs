// The official SDKs against Gateway.serve(): the gateway's own Rust HTTP server.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setup } from './helpers.mjs';
import { sdkChecks } from './sdk-suite.mjs';

test('official SDKs against serve()', async (t) => {
  const { mock, gw, records } = await setup();
  const server = await gw.serve({ host: '127.0.0.1', port: 0 });
  try {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(server.url, `http://${server.host}:${server.port}`);
    await sdkChecks(t, server.url, records, mock);
  } finally {
    await server.close();
    await mock.stop();
  }
  // Closed: new connections are refused.
  await assert.rejects(fetch(`${server.url}/v1/models`));
});

test('serve(): close() waits for a stream in flight within the grace period', async () => {
  const { mock, gw, records } = await setup({ chunks: 5, chunk_delay: 60 });
  const server = await gw.serve();
  try {
    const resp = await fetch(`${server.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'sk-alice-0001', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, stream: true, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(resp.status, 200);
    const closing = server.close({ graceMs: 5000 });
    const text = await resp.text();
    await closing;
    assert.match(text, /event: message_stop/);
    const { waitForRecords } = await import('./helpers.mjs');
    const [record] = await waitForRecords(records, 1);
    assert.equal(record.outcome, 'success');
  } finally {
    await mock.stop();
  }
});

test('serve(): a port in use is an error', async () => {
  const { mock, gw } = await setup();
  const first = await gw.serve();
  try {
    await assert.rejects(gw.serve({ port: first.port }), /cannot listen/);
  } finally {
    await first.close();
    await mock.stop();
  }
});
