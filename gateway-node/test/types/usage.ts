// Compiled (not run) by types.test.mjs: every export of index.d.ts used as the README and tests
// use it, plus misuses that must not type-check (`@ts-expect-error` fails if they do).

import http from 'node:http';
import {
  DIALECTS,
  Gateway,
  GatewayResponse,
  GatewayServer,
  MockUpstream,
  translateRequest,
  translateResponse,
  type ConfigObject,
  type Dialect,
  type UsageRecord,
} from 'llm-gateway';

async function main(): Promise<void> {
  const mock: MockUpstream = await MockUpstream.start({ behavior: { chunks: 2, chunk_delay: 10, fake_200: 'sse_error' } });
  mock.setBehavior({ force_status: 529, usage: { input_tokens: 3 } });
  const chunks: number = mock.behavior().chunks;
  const seen: string = mock.received()[0].body;
  mock.setRecording(false);
  mock.clearReceived();

  const config: ConfigObject = {
    providers: [{ name: 'p', type: 'claude', base_url: mock.url, api_key: 'k', translate_from: ['openai-chat'] }],
    users: [{ name: 'u', keys: [{ name: 'k', key: 'sk-12345678' }] }],
    prices: [{ model: 'm', input_per_mtok: '3', output_per_mtok: '15' }],
  };
  const gw = new Gateway(config, { redisUrl: 'redis://127.0.0.1:6379', sessionTtlSeconds: 60 });
  new Gateway('gateway.toml');
  new Gateway(new URL('file:///etc/gateway.toml'));

  const off: () => void = gw.onUsage((r: UsageRecord) => {
    const cost: number | null = r.cost;
    const outcome: 'success' | 'upstream_error' | 'rejected' | 'failed' | 'client_abort' = r.outcome;
    const out: number = r.usage.output_tokens;
    void [cost, outcome, out];
  });
  off();

  const resp: GatewayResponse = await gw.request({ method: 'POST', path: '/v1/messages', headers: { 'x-api-key': 'k' }, body: { a: 1 } });
  const status: number = resp.status;
  const ct: string | undefined = resp.headers['content-type'];
  for await (const chunk of resp.body) {
    const bytes: Uint8Array = chunk;
    void bytes;
  }
  const parsed = await resp.json<{ id: string }>();
  const id: string = parsed.id;

  const server: GatewayServer = await gw.serve({ port: 0 });
  const url: string = server.url;
  await server.close({ graceMs: 100 });
  server.unref().ref();

  http.createServer(gw.handler({ prefix: '/llm' }));
  http.createServer(gw.handler());

  const dialect: Dialect = DIALECTS[0];
  const t = translateRequest<{ messages: unknown[] }>({ model: 'm' }, dialect, 'openai-chat');
  const notes: string[] = t.notes;
  const messages: unknown[] = t.body.messages;
  translateResponse('{}', 'anthropic', 'gemini');
  await mock.stop();

  // @ts-expect-error not a dialect
  translateRequest({}, 'openai', 'anthropic');
  // @ts-expect-error path is required
  await gw.request({ method: 'GET' });
  // @ts-expect-error not a provider type
  new Gateway({ providers: [{ name: 'p', type: 'anthropic', base_url: '', api_key: '' }] });
  // @ts-expect-error status is read-only
  resp.status = 200;
  // @ts-expect-error start() is the only way to get one
  new MockUpstream();

  void [chunks, seen, status, ct, id, url, notes, messages];
}

void main;
