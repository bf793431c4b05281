'use strict';
// The public API of `llm-gateway` (typed in index.d.ts) over the native addon built from
// src/*.rs. The addon speaks in flat header lists, Buffers and JSON text; this file turns that
// into idiomatic JavaScript: objects, async iterables and node:http handlers.

const fs = require('node:fs');
const path = require('node:path');
const { once } = require('node:events');

const ADDON = path.join(__dirname, 'llm-gateway.node');

function loadAddon() {
  try {
    return require(ADDON);
  } catch (err) {
    if (!fs.existsSync(ADDON)) {
      const e = new Error(
        `llm-gateway: the native addon ${ADDON} is missing; build it with \`npm run build\` ` +
          '(needs a Rust toolchain), or reinstall the package',
      );
      e.cause = err;
      throw e;
    }
    throw err;
  }
}

const native = loadAddon();

const DIALECTS = ['anthropic', 'openai-chat', 'openai-responses', 'gemini'];

/** Headers given as an object, a Headers/Map or [name, value] pairs → flat [name, value, ...]. */
function flattenHeaders(headers) {
  const flat = [];
  if (headers == null) return flat;
  const push = (name, value) => {
    if (value === undefined || value === null) return;
    if (Array.isArray(value)) {
      for (const v of value) flat.push(String(name).toLowerCase(), String(v));
    } else {
      flat.push(String(name).toLowerCase(), String(value));
    }
  };
  if (typeof headers.entries === 'function' && !Array.isArray(headers)) {
    for (const [name, value] of headers.entries()) push(name, value);
  } else if (Array.isArray(headers)) {
    for (const [name, value] of headers) push(name, value);
  } else if (typeof headers === 'object') {
    for (const name of Object.keys(headers)) push(name, headers[name]);
  } else {
    throw new TypeError('headers must be an object, a Headers or Map, or [name, value] pairs');
  }
  return flat;
}

/** Flat [name, value, ...] → object; repeated names are joined with ", " as fetch does. */
function headersObject(flat) {
  const out = {};
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i];
    out[name] = name in out ? `${out[name]}, ${flat[i + 1]}` : flat[i + 1];
  }
  return out;
}

function hasHeader(flat, name) {
  for (let i = 0; i < flat.length; i += 2) if (flat[i] === name) return true;
  return false;
}

/** A request body as bytes, plus the content type it implies when the caller set none. */
function bodyBytes(body) {
  if (body === undefined || body === null) return { bytes: undefined, type: undefined };
  if (Buffer.isBuffer(body)) return { bytes: body, type: undefined };
  if (body instanceof Uint8Array) {
    return { bytes: Buffer.from(body.buffer, body.byteOffset, body.byteLength), type: undefined };
  }
  if (body instanceof ArrayBuffer) return { bytes: Buffer.from(body), type: undefined };
  if (typeof body === 'string') return { bytes: Buffer.from(body, 'utf8'), type: undefined };
  return { bytes: Buffer.from(JSON.stringify(body), 'utf8'), type: 'application/json' };
}

/**
 * A gateway response. `body` is an async iterable of Uint8Array chunks delivered as the
 * gateway produces them; `text()`, `json()` and `bytes()` read it whole instead. The body can
 * be consumed once.
 */
class GatewayResponse {
  #native;
  #used = false;

  constructor(nativeResponse) {
    this.#native = nativeResponse;
    /** @type {number} */
    this.status = nativeResponse.status;
    const flat = nativeResponse.headers;
    /** Header names in lower case; repeated headers joined with ", ". */
    this.headers = headersObject(flat);
    /** The headers as [name, value] pairs, repeats kept. */
    this.rawHeaders = [];
    for (let i = 0; i + 1 < flat.length; i += 2) this.rawHeaders.push([flat[i], flat[i + 1]]);
    this.body = { [Symbol.asyncIterator]: () => this.#iterate() };
  }

  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  get bodyUsed() {
    return this.#used;
  }

  #take() {
    if (this.#used) throw new TypeError('the response body was already read');
    this.#used = true;
  }

  async *#iterate() {
    this.#take();
    const nativeResponse = this.#native;
    let done = false;
    try {
      for (;;) {
        // What has arrived is taken synchronously; only an empty queue costs an async call.
        let chunk = nativeResponse.poll();
        if (chunk === false) chunk = await nativeResponse.next();
        if (chunk === true || chunk === null) {
          done = true;
          return;
        }
        yield chunk;
      }
    } finally {
      // Leaving the loop early (break, throw) cancels the rest of the body: the gateway
      // records the request as abandoned by the client, as it would for a closed socket.
      if (!done) nativeResponse.cancel();
    }
  }

  /** The whole body as bytes. */
  async bytes() {
    const buf = await this.#readAll();
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** The whole body as UTF-8 text. */
  async text() {
    return (await this.#readAll()).toString('utf8');
  }

  async #readAll() {
    this.#take();
    return this.#native.takeComplete() ?? (await this.#native.readAll());
  }

  /** The whole body parsed as JSON. */
  async json() {
    return JSON.parse(await this.text());
  }

  /** Drops the body without reading it (recorded as a client that went away). */
  cancel() {
    this.#used = true;
    this.#native.cancel();
  }
}

function configArgs(config) {
  if (config instanceof URL) return ['path', require('node:url').fileURLToPath(config)];
  if (typeof config === 'string') {
    // TOML always has `=` or a table header on some line; a file path has neither.
    return /[\n=]/.test(config) || config.trim().startsWith('[') ? ['toml', config] : ['path', config];
  }
  if (config && typeof config === 'object') return ['json', JSON.stringify(config)];
  throw new TypeError('config must be a TOML file path, TOML text or an object with the TOML keys');
}

function nativeOptions(options) {
  const o = options || {};
  return {
    redisUrl: o.redisUrl,
    redisKeyPrefix: o.redisKeyPrefix,
    maxBodyBytes: o.maxBodyBytes,
    sessionTtlSeconds: o.sessionTtlSeconds,
    maxProviderSwitches: o.maxProviderSwitches,
    circuitBreakerOnNetworkErrors: o.circuitBreakerOnNetworkErrors,
    timezone: o.timezone,
  };
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
]);

/** The gateway's handling of one node:http-style request/response pair. */
async function serveHttp(gateway, prefix, req, res) {
  let rawReq = req;
  let rawRes = res;
  let url = req.url || '/';
  let preread;
  // Fastify passes (request, reply): answer on the raw objects, outside Fastify's reply flow.
  if (req && req.raw && res && res.raw && typeof res.hijack === 'function') {
    res.hijack();
    rawReq = req.raw;
    rawRes = res.raw;
    url = rawReq.url || '/';
    // Under a wildcard route (`/prefix/*`) the wildcard is the gateway path.
    if (prefix === undefined && req.params && typeof req.params['*'] === 'string') {
      const query = url.indexOf('?');
      url = '/' + req.params['*'] + (query >= 0 ? url.slice(query) : '');
    }
    preread = req.body;
  } else if (req.body !== undefined && req.readableEnded) {
    // Express with a body parser already consumed the stream.
    preread = req.body;
  }
  if (prefix && (url === prefix || url.startsWith(prefix + '/') || url.startsWith(prefix + '?'))) {
    url = url.slice(prefix.length) || '/';
    if (url.startsWith('?')) url = '/' + url;
  }

  const method = rawReq.method || 'GET';
  let body;
  let reencoded = false;
  if (preread !== undefined && preread !== null) {
    if (Buffer.isBuffer(preread)) body = preread;
    else if (typeof preread === 'string') body = Buffer.from(preread, 'utf8');
    else {
      // A parsed JSON body: the original bytes are gone, so this is the closest equivalent.
      body = Buffer.from(JSON.stringify(preread), 'utf8');
      reencoded = true;
    }
  } else if (method !== 'GET' && method !== 'HEAD') {
    const chunks = [];
    for await (const chunk of rawReq) chunks.push(chunk);
    body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
  }

  const headers = [];
  const raw = rawReq.rawHeaders || [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (HOP_BY_HOP.has(name)) continue;
    // The body is handed over whole; a re-encoded one has another length and no encoding.
    if (reencoded && (name === 'content-length' || name === 'content-encoding')) continue;
    headers.push(name, raw[i + 1]);
  }

  // Listen before awaiting the gateway: a client may leave while the upstream is thinking.
  let aborted = false;
  let response;
  rawRes.on('close', () => {
    if (!rawRes.writableFinished) {
      aborted = true;
      if (response) response.cancel();
    }
  });
  response = await gateway._native.request(method, url, headers, body);
  if (aborted || rawRes.destroyed) {
    response.cancel();
    return;
  }

  const flat = response.headers;
  const outHeaders = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    if (!HOP_BY_HOP.has(flat[i])) outHeaders.push(flat[i], flat[i + 1]);
  }
  rawRes.writeHead(response.status, outHeaders);
  if (method === 'HEAD') {
    response.cancel();
    rawRes.end();
    return;
  }
  // A body that was complete with the response goes out in one write.
  const whole = response.takeComplete();
  if (whole !== null) {
    rawRes.end(whole);
    return;
  }
  // Headers go out before the first chunk, so a streaming client sees the response begin.
  rawRes.flushHeaders();
  try {
    while (!aborted) {
      let chunk = response.poll();
      if (chunk === false) chunk = await response.next();
      if (chunk === true || chunk === null) break;
      if (!aborted && !rawRes.write(chunk)) {
        await Promise.race([once(rawRes, 'drain'), once(rawRes, 'close')]);
      }
    }
  } catch (err) {
    response.cancel();
    throw err;
  }
  if (!aborted) rawRes.end();
}

/**
 * The gateway, in-process. `config` is a TOML file path, TOML text, or an object with the keys
 * of the server's TOML import.
 */
class Gateway {
  constructor(config, options) {
    const [kind, text] = configArgs(config);
    /** @internal */
    this._native = new native.NativeGateway(kind, text, nativeOptions(options));
    this._listeners = new Set();
  }

  /**
   * Serves one request in-process: `{ method, path, headers, body }` → `{ status, headers,
   * body }`. A non-string, non-binary body is sent as JSON.
   */
  async request(req) {
    if (!req || typeof req !== 'object') throw new TypeError('request expects { method, path, headers, body }');
    const headers = flattenHeaders(req.headers);
    const { bytes, type } = bodyBytes(req.body);
    if (type && !hasHeader(headers, 'content-type')) headers.push('content-type', type);
    const method = (req.method || (bytes ? 'POST' : 'GET')).toUpperCase();
    const p = req.path || '/';
    return new GatewayResponse(await this._native.request(method, p, headers, bytes));
  }

  /**
   * A `(req, res)` handler for node:http, Express (`app.use('/llm', gw.handler())`) and Fastify
   * (`fastify.all('/llm/*', gw.handler())`). `prefix` is stripped from the path first.
   */
  handler(options) {
    const prefix = options && options.prefix ? String(options.prefix).replace(/\/+$/, '') : undefined;
    return (req, res) => {
      serveHttp(this, prefix, req, res).catch((err) => {
        const rawRes = res && res.raw && typeof res.hijack === 'function' ? res.raw : res;
        if (!rawRes.headersSent) {
          const body = JSON.stringify({ error: { type: 'gateway_error', message: String(err && err.message) } });
          rawRes.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          rawRes.end(body);
        } else {
          rawRes.destroy(err);
        }
      });
    };
  }

  /** Serves HTTP from Rust on `host:port` (defaults 127.0.0.1 and a free port). */
  async serve(options) {
    const o = options || {};
    const server = await this._native.serve(o.host || '127.0.0.1', o.port === undefined ? 0 : o.port);
    return new GatewayServer(server);
  }

  /**
   * Calls `callback(record)` with each usage record (the canonical usage-record JSON as an
   * object), after the request it describes ended. Returns a function that unsubscribes.
   */
  onUsage(callback) {
    if (typeof callback !== 'function') throw new TypeError('onUsage expects a function');
    if (this._listeners.size === 0) this._native.setUsageCallback((json) => this._deliver(json));
    this._listeners.add(callback);
    return () => {
      this._listeners.delete(callback);
      if (this._listeners.size === 0) this._native.setUsageCallback(null);
    };
  }

  /** @internal */
  _deliver(json) {
    if (this._listeners.size === 0) return;
    const record = JSON.parse(json);
    for (const listener of this._listeners) {
      try {
        listener(record);
      } catch (err) {
        // A failing listener must not break delivery to the others, nor the gateway.
        process.emitWarning(`llm-gateway: an onUsage callback threw: ${err && err.stack ? err.stack : err}`);
      }
    }
  }
}

/** A server started by `Gateway.serve`. It keeps the process alive until closed (or `unref()`). */
class GatewayServer {
  #native;
  #keepAlive;

  constructor(nativeServer) {
    this.#native = nativeServer;
    this.url = nativeServer.url;
    this.host = nativeServer.host;
    this.port = nativeServer.port;
    // The listener lives in Rust, where Node's event loop cannot see it: a timer stands in.
    this.#keepAlive = setInterval(() => {}, 1 << 30);
  }

  /** Stops accepting; requests in flight get `graceMs` (default 10 000) to finish. */
  async close(options) {
    clearInterval(this.#keepAlive);
    const grace = options && options.graceMs !== undefined ? options.graceMs : undefined;
    await this.#native.close(grace);
  }

  /** Lets the process exit while the server is open. */
  unref() {
    this.#keepAlive.unref();
    return this;
  }

  ref() {
    this.#keepAlive.ref();
    return this;
  }
}

function dialectName(name, what) {
  if (!DIALECTS.includes(name)) {
    throw new TypeError(`${what} must be one of ${DIALECTS.join(', ')}, got ${JSON.stringify(name)}`);
  }
  return name;
}

function translate(fn, body, source, target) {
  const { bytes } = bodyBytes(body);
  if (!bytes) throw new TypeError('body is required');
  const out = fn(bytes, dialectName(source, 'source'), dialectName(target, 'target'));
  return { body: JSON.parse(out.body.toString('utf8')), notes: out.notes };
}

/** Translates a request body (object, JSON text or bytes) between dialects. */
function translateRequest(body, source, target) {
  return translate(native.translateRequestNative, body, source, target);
}

/** Translates a complete (non-stream) response body between dialects. */
function translateResponse(body, source, target) {
  return translate(native.translateResponseNative, body, source, target);
}

const DURATIONS = ['first_byte_delay', 'chunk_delay'];

/** Behaviour in MockBehavior's serde form; durations may also be given as milliseconds. */
function behaviorJson(behavior) {
  if (behavior === undefined || behavior === null) return undefined;
  const b = { ...behavior };
  for (const key of DURATIONS) {
    if (typeof b[key] === 'number') {
      const ms = b[key];
      b[key] = { secs: Math.floor(ms / 1000), nanos: Math.round((ms % 1000) * 1e6) };
    }
  }
  return JSON.stringify(b);
}

/**
 * A fake Anthropic / OpenAI / Responses / Gemini upstream on a loopback port, for tests.
 * Start it with `await MockUpstream.start()`.
 */
class MockUpstream {
  #native;

  constructor(nativeMock) {
    if (!nativeMock) throw new TypeError('use `await MockUpstream.start()`');
    this.#native = nativeMock;
    this.url = nativeMock.url;
  }

  static async start(options) {
    const o = options || {};
    const m = await native.startMock(behaviorJson(o.behavior), o.host || '127.0.0.1', o.port || 0);
    return new MockUpstream(m);
  }

  /** Replaces the behaviour; fields left out take their defaults. */
  setBehavior(behavior) {
    this.#native.setBehavior(behaviorJson(behavior || {}));
  }

  /** The current behaviour (serde form). */
  behavior() {
    return JSON.parse(this.#native.behavior());
  }

  /** Requests received so far: `{ method, path, headers, body }`, body as text. */
  received() {
    return this.#native.received().map((r) => ({
      method: r.method,
      path: r.path,
      headers: headersObject(r.headers),
      body: r.body.toString('utf8'),
    }));
  }

  clearReceived() {
    this.#native.clearReceived();
  }

  /** Turns request recording on (default) or off, e.g. for long benchmarks. */
  setRecording(on) {
    this.#native.setRecording(Boolean(on));
  }

  /** Stops accepting connections; requests in flight finish. */
  async stop() {
    this.#native.stop();
  }
}

module.exports = {
  Gateway,
  GatewayResponse,
  GatewayServer,
  MockUpstream,
  translateRequest,
  translateResponse,
  DIALECTS,
};
