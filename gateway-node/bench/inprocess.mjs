#!/usr/bin/env node
// Per-call cost of the Node binding, against the mock upstream on loopback:
//
//   direct      node:http client → mock                          (the floor: no gateway)
//   in-process  gw.request() → gateway-core → mock               (the binding, no client HTTP hop)
//   serve()     node:http client → gw.serve() (Rust hyper) → …   (gateway over loopback HTTP)
//   handler()   node:http client → node:http + gw.handler() → …  (gateway inside a Node server)
//
// Each mode runs the same non-stream and stream Anthropic requests sequentially (latency) and
// with 16 in flight (throughput), then a request the gateway answers itself (404, no upstream):
// the floor of one call through each entry. Bounded: N requests per measurement.
//
//   node bench/inprocess.mjs [--n 2000] [--concurrency 16] [--json]

import http from 'node:http';
import os from 'node:os';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';

import { Gateway, MockUpstream } from '../index.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const N = opt('n', 2000);
const CONCURRENCY = opt('concurrency', 16);
const WARMUP = Math.min(200, N);
const asJson = args.includes('--json');

const KEY = 'sk-bench-0001';
const body = (stream) =>
  JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 64, stream, messages: [{ role: 'user', content: 'Hello' }] });
const headers = { 'x-api-key': KEY, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' };

const mock = await MockUpstream.start();
// Recording every request would grow memory through the run.
mock.setRecording(false);
const gw = new Gateway({
  providers: [{ name: 'mock', type: 'claude', base_url: mock.url, api_key: 'sk-upstream' }],
  users: [{ name: 'bench', keys: [{ name: 'k', key: KEY }] }],
  prices: [{ model: 'claude-sonnet-4-5', input_per_mtok: '3', output_per_mtok: '15' }],
});
let usageRecords = 0;
gw.onUsage(() => {
  usageRecords += 1;
});
const served = await gw.serve();
const nodeServer = http.createServer(gw.handler());
nodeServer.listen(0, '127.0.0.1');
await once(nodeServer, 'listening');
const handlerUrl = `http://127.0.0.1:${nodeServer.address().port}`;

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY * 2 });

/** One request with node:http; resolves with the byte count after the whole body. */
function httpCall(base, stream, path = '/v1/messages', expect = 200) {
  return new Promise((resolve, reject) => {
    const payload = body(stream);
    const req = http.request(
      `${base}${path}`,
      { method: 'POST', agent, headers: { ...headers, 'content-length': Buffer.byteLength(payload) } },
      (res) => {
        let n = 0;
        res.on('data', (c) => (n += c.length));
        res.on('end', () => (res.statusCode === expect ? resolve(n) : reject(new Error(`status ${res.statusCode}`))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function inProcessCall(stream) {
  const resp = await gw.request({ method: 'POST', path: '/v1/messages', headers, body: body(stream) });
  if (resp.status !== 200) throw new Error(`status ${resp.status}`);
  if (stream) {
    let n = 0;
    for await (const chunk of resp.body) n += chunk.length;
    return n;
  }
  return (await resp.bytes()).length;
}

async function inProcess404() {
  const resp = await gw.request({ method: 'POST', path: '/nope', headers, body: body(false) });
  if (resp.status !== 404) throw new Error(`status ${resp.status}`);
  return (await resp.bytes()).length;
}

const floorModes = {
  'in-process': inProcess404,
  'serve()': () => httpCall(served.url, false, '/nope', 404),
  'handler()': () => httpCall(handlerUrl, false, '/nope', 404),
};

const modes = {
  direct: (stream) => httpCall(mock.url, stream),
  'in-process': inProcessCall,
  'serve()': (stream) => httpCall(served.url, stream),
  'handler()': (stream) => httpCall(handlerUrl, stream),
};

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function sequential(fn, stream) {
  for (let i = 0; i < WARMUP; i++) await fn(stream);
  const lat = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    await fn(stream);
    lat[i] = performance.now() - t0;
  }
  lat.sort();
  const mean = lat.reduce((a, b) => a + b, 0) / N;
  return { mean_us: mean * 1000, p50_us: percentile(lat, 50) * 1000, p99_us: percentile(lat, 99) * 1000 };
}

async function concurrent(fn, stream) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < N) {
        next += 1;
        await fn(stream);
      }
    }),
  );
  return { rps: N / ((performance.now() - t0) / 1000) };
}

// Every mode warms up first, so the first row measured does not pay for JIT and connection setup.
for (const fn of Object.values(modes)) {
  for (let i = 0; i < WARMUP; i++) {
    await fn(false);
    await fn(true);
  }
}

const results = [];
for (const stream of [false, true]) {
  for (const [name, fn] of Object.entries(modes)) {
    const seq = await sequential(fn, stream);
    const conc = await concurrent(fn, stream);
    results.push({ mode: name, body: stream ? 'stream' : 'json', ...seq, ...conc });
  }
}
for (const [name, fn] of Object.entries(floorModes)) {
  const seq = await sequential(fn, false);
  const conc = await concurrent(fn, false);
  results.push({ mode: name, body: '404, no upstream', ...seq, ...conc });
}

await served.close();
await new Promise((resolve) => nodeServer.close(resolve));
agent.destroy();
await mock.stop();

const env = {
  node: process.version,
  cpus: os.cpus().length,
  loadavg_1m: os.loadavg()[0].toFixed(2),
  n: N,
  concurrency: CONCURRENCY,
  usage_records: usageRecords,
};
if (asJson) {
  console.log(JSON.stringify({ env, results }, null, 2));
} else {
  console.log(`node ${env.node}, ${env.cpus} CPUs, load ${env.loadavg_1m}, N=${N} per row, ${CONCURRENCY} in flight`);
  console.log('| body | mode | mean µs | p50 µs | p99 µs | req/s (16 in flight) |');
  console.log('|---|---|---:|---:|---:|---:|');
  for (const r of results) {
    const f = (x) => Math.round(x).toLocaleString('en-US');
    console.log(`| ${r.body} | ${r.mode} | ${f(r.mean_us)} | ${f(r.p50_us)} | ${f(r.p99_us)} | ${f(r.rps)} |`);
  }
}
