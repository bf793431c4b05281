// `redisUrl`: two in-process gateways sharing one Redis route a session to the same provider
// (bindings live in Redis, not in either process). Needs Redis at 127.0.0.1:6379: skipped when
// it is unreachable, except in CI (CI=true), where that is a failure.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { Gateway, MockUpstream } from '../index.mjs';
import { waitForRecords } from './helpers.mjs';

const REDIS = { host: '127.0.0.1', port: 6379 };

/** One command over RESP; resolves with the parsed reply (bulk strings as text). */
function redis(...args) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(REDIS);
    let buf = Buffer.alloc(0);
    socket.setTimeout(2000, () => socket.destroy(new Error('redis timed out')));
    socket.on('error', reject);
    socket.on('connect', () => {
      socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
    });
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const parsed = parse(buf, 0);
      if (parsed) {
        socket.end();
        if (parsed.value instanceof Error) reject(parsed.value);
        else resolve(parsed.value);
      }
    });
  });
}

/** Parses one RESP value at `at`; null when incomplete. */
function parse(buf, at) {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return null;
  const line = buf.toString('utf8', at + 1, eol);
  const next = eol + 2;
  switch (String.fromCharCode(buf[at])) {
    case '+':
      return { value: line, end: next };
    case '-':
      return { value: new Error(line), end: next };
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, end: next };
      if (buf.length < next + len + 2) return null;
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case '*': {
      const items = [];
      let pos = next;
      for (let i = 0; i < Number(line); i++) {
        const item = parse(buf, pos);
        if (!item) return null;
        items.push(item.value);
        pos = item.end;
      }
      return { value: items, end: pos };
    }
    default:
      return { value: new Error(`unexpected RESP ${line}`), end: next };
  }
}

async function redisUp() {
  try {
    return (await redis('PING')) === 'PONG';
  } catch {
    return false;
  }
}

test('two gateways sharing Redis keep each session on one provider', async (t) => {
  if (!(await redisUp())) {
    if (process.env.CI === 'true') assert.fail('Redis is required in CI but 127.0.0.1:6379 is unreachable');
    t.skip('Redis at 127.0.0.1:6379 is unreachable');
    return;
  }
  const prefix = `gw-node-test-${process.pid}-${Date.now()}:`;
  const mock = await MockUpstream.start();
  const config = {
    // Two equal providers: without shared bindings each replica picks at random.
    providers: ['a', 'b'].map((name) => ({ name, type: 'claude', base_url: mock.url, api_key: `sk-upstream-${name}` })),
    users: [{ name: 'u', keys: [{ name: 'k', key: 'sk-redis-0001' }] }],
  };
  const options = { redisUrl: `redis://${REDIS.host}:${REDIS.port}`, redisKeyPrefix: prefix };
  const replicas = [new Gateway(config, options), new Gateway(config, options)];
  const records = [];
  for (const gw of replicas) gw.onUsage((r) => records.push(r));
  try {
    const sessions = Array.from({ length: 8 }, (_, i) => `session-${i}`);
    const send = async (gw, session) => {
      const resp = await gw.request({
        path: '/v1/messages',
        headers: { 'x-api-key': 'sk-redis-0001', 'x-session-id': session, 'content-type': 'application/json' },
        body: { model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: session }] },
      });
      const text = await resp.text();
      assert.equal(resp.status, 200, text);
    };
    for (const s of sessions) await send(replicas[0], s);
    await waitForRecords(records, sessions.length);
    for (const s of sessions) await send(replicas[1], s);
    await waitForRecords(records, 2 * sessions.length);
    const providerOf = (list) => Object.fromEntries(list.map((r) => [r.session_id, r.provider_name]));
    const first = providerOf(records.slice(0, sessions.length));
    const second = providerOf(records.slice(sessions.length));
    // By chance alone all eight would agree once in 256 runs.
    assert.deepEqual(second, first);
    const keys = await redis('KEYS', `${prefix}*`);
    assert.ok(keys.length >= sessions.length, `keys under ${prefix}: ${JSON.stringify(keys)}`);
  } finally {
    const keys = await redis('KEYS', `${prefix}*`).catch(() => []);
    if (keys.length) await redis('DEL', ...keys).catch(() => {});
    await mock.stop();
  }
});
