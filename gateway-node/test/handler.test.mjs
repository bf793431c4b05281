// The official SDKs against handler() mounted in node:http (with and without a prefix),
// Express and Fastify; client disconnects mid-stream.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import express from 'express';
import Fastify from 'fastify';

import { anthropicBody, setup, waitForRecords } from './helpers.mjs';
import { sdkChecks } from './sdk-suite.mjs';

async function listen(server) {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${server.address().port}`;
}

async function closeServer(server) {
  server.closeAllConnections?.();
  await new Promise((resolve) => server.close(resolve));
}

test('official SDKs against a node:http server using handler()', async (t) => {
  const { mock, gw, records } = await setup();
  const server = http.createServer(gw.handler());
  const url = await listen(server);
  try {
    await sdkChecks(t, url, records, mock);
  } finally {
    await closeServer(server);
    await mock.stop();
  }
});

test('handler({ prefix }) under node:http, with other routes beside it', async (t) => {
  const { mock, gw, records } = await setup();
  const llm = gw.handler({ prefix: '/llm/' });
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/llm/') || req.url === '/llm') return llm(req, res);
    res.writeHead(200, { 'content-type': 'text/plain' }).end('app');
  });
  const url = await listen(server);
  try {
    assert.equal(await (await fetch(`${url}/other`)).text(), 'app');
    await sdkChecks(t, `${url}/llm`, records, mock);
    assert.ok(mock.received().every((r) => !r.path.startsWith('/llm')));
  } finally {
    await closeServer(server);
    await mock.stop();
  }
});

test('handler() mounted in Express under /llm, next to express.json()', async (t) => {
  const { mock, gw, records } = await setup();
  const app = express();
  app.get('/health', (_req, res) => res.send('ok'));
  // A JSON body parser in front: the handler uses the parsed body.
  app.use('/llm', express.json(), gw.handler());
  const server = http.createServer(app);
  const url = await listen(server);
  try {
    assert.equal(await (await fetch(`${url}/health`)).text(), 'ok');
    await sdkChecks(t, `${url}/llm`, records, mock);
  } finally {
    await closeServer(server);
    await mock.stop();
  }
});

test('handler() as a Fastify wildcard route under /llm', async (t) => {
  const { mock, gw, records } = await setup();
  const app = Fastify();
  await app.register(
    async (scope) => {
      // Raw bytes for the gateway: it forwards bodies byte for byte.
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
      scope.all('/*', gw.handler());
    },
    { prefix: '/llm' },
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  const url = `http://127.0.0.1:${app.server.address().port}`;
  try {
    await sdkChecks(t, `${url}/llm`, records, mock);
  } finally {
    await app.close();
    await mock.stop();
  }
});

test('handler(): a client that disconnects mid-stream is recorded as client_abort', async () => {
  const { mock, gw, records } = await setup({ chunks: 50, chunk_delay: 40 });
  const server = http.createServer(gw.handler());
  const url = await listen(server);
  try {
    const controller = new AbortController();
    const resp = await fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'sk-alice-0001', 'content-type': 'application/json' },
      body: JSON.stringify(anthropicBody({ stream: true })),
      signal: controller.signal,
    });
    const reader = resp.body.getReader();
    await reader.read();
    controller.abort();
    const [record] = await waitForRecords(records, 1);
    assert.equal(record.outcome, 'client_abort');
    // The upstream stream was dropped too, long before its 2 s of deltas.
    assert.ok(record.duration_ms < 1500, `duration ${record.duration_ms} ms`);
  } finally {
    await closeServer(server);
    await mock.stop();
  }
});

test('handler(): HEAD and errors', async () => {
  const { mock, gw } = await setup();
  const server = http.createServer(gw.handler());
  const url = await listen(server);
  try {
    const resp = await fetch(`${url}/v1/messages`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    assert.equal(resp.status, 401);
    assert.equal((await resp.json()).error.type, 'authentication_error');
    const head = await fetch(`${url}/`, { method: 'HEAD' });
    assert.ok(head.status < 500);
  } finally {
    await closeServer(server);
    await mock.stop();
  }
});
