// Type declarations of `llm-gateway`, the Node.js binding of the LLM gateway.

import type { IncomingMessage, ServerResponse } from 'node:http';

/** The API dialects the gateway speaks and translates between. */
export type Dialect = 'anthropic' | 'openai-chat' | 'openai-responses' | 'gemini';

/** The dialect names, in the gateway's own order. */
export declare const DIALECTS: readonly Dialect[];

/** Request or response headers as the caller may give them. */
export type HeadersInit =
  | Record<string, string | number | readonly string[] | undefined | null>
  | Iterable<readonly [string, string]>
  | { entries(): Iterable<[string, string]> };

/** A match rule: an exact model name, or a table with the match kind. */
export type ModelPattern = string | { match: 'exact' | 'prefix' | 'suffix' | 'contains' | 'regex'; pattern: string };

/** `[[providers]]` of the TOML import. Decimals are strings, as in TOML. */
export interface ProviderConfig {
  name: string;
  type: 'claude' | 'codex' | 'openai-compatible' | 'gemini';
  base_url: string;
  api_key: string;
  weight?: number;
  priority?: number;
  groups?: string[];
  cost_multiplier?: string;
  model_redirects?: Array<{ match?: 'exact' | 'prefix' | 'suffix' | 'contains' | 'regex'; from: string; to: string }>;
  enabled?: boolean;
  allowed_models?: ModelPattern[];
  group_priorities?: Record<string, number>;
  active_from?: string;
  active_to?: string;
  max_retry_attempts?: number;
  circuit_breaker_failure_threshold?: number;
  circuit_breaker_open_duration_ms?: number;
  circuit_breaker_half_open_success_threshold?: number;
  proxy_url?: string;
  proxy_fallback_to_direct?: boolean;
  custom_headers?: Record<string, string>;
  preserve_client_ip?: boolean;
  disable_session_reuse?: boolean;
  limit_concurrent_sessions?: number;
  connect_timeout_ms?: number;
  first_byte_timeout_ms?: number;
  stream_idle_timeout_ms?: number;
  request_timeout_ms?: number;
  translate_from?: Dialect[];
  codex_instructions?: 'keep' | 'inject';
  codex_instructions_text?: string;
}

/** `[[users.keys]]` of the TOML import. */
export interface KeyConfig {
  name: string;
  /** The plain key (at least 8 characters); `${VAR}` is expanded. */
  key: string;
  enabled?: boolean;
  /** RFC 3339 instant. */
  expires_at?: string;
  groups?: string[];
  allowed_models?: ModelPattern[];
}

/** `[[users]]` of the TOML import. */
export interface UserConfig {
  name: string;
  groups?: string[];
  enabled?: boolean;
  expires_at?: string;
  allowed_models?: ModelPattern[];
  keys?: KeyConfig[];
}

/** `[[prices]]` of the TOML import: USD per million tokens, as decimal strings. */
export interface PriceConfig {
  model: string;
  input_per_mtok: string;
  output_per_mtok: string;
  cache_write_5m_per_mtok?: string;
  cache_write_1h_per_mtok?: string;
  cache_read_per_mtok?: string;
}

/** The server's TOML import format as an object (unknown keys are rejected). */
export interface ConfigObject {
  providers?: ProviderConfig[];
  users?: UserConfig[];
  prices?: PriceConfig[];
}

/** Settings besides the configuration; the server's flags of the same meaning. */
export interface GatewayOptions {
  /** Share routing state (sessions, breakers, cooldowns) with other replicas through Redis. */
  redisUrl?: string;
  /** Prefix of every Redis key (default `gw:`). */
  redisKeyPrefix?: string;
  /** Request body limit in bytes after decompression (default 32 MiB). */
  maxBodyBytes?: number;
  /** Seconds a session stays bound to its provider (default 300). */
  sessionTtlSeconds?: number;
  /** Most providers tried for one request (default 3). */
  maxProviderSwitches?: number;
  /** Whether connection failures count toward opening a circuit (default false). */
  circuitBreakerOnNetworkErrors?: boolean;
  /** IANA timezone of providers' active windows (default UTC). */
  timezone?: string;
}

/** A request to the in-process gateway. */
export interface GatewayRequest {
  /** Default `POST` with a body, else `GET`. */
  method?: string;
  /** Path and query, e.g. `/v1/messages`. */
  path: string;
  headers?: HeadersInit;
  /** Bytes and strings are sent as they are; any other value as JSON (with `content-type: application/json` unless set). */
  body?: string | Uint8Array | ArrayBuffer | object | null;
}

/** A gateway response; the body streams and can be consumed once. */
export declare class GatewayResponse {
  private constructor();
  readonly status: number;
  /** Whether the status is 2xx. */
  readonly ok: boolean;
  /** Header names in lower case; repeated headers joined with ", ". */
  readonly headers: Record<string, string>;
  /** The headers as [name, value] pairs, repeats kept. */
  readonly rawHeaders: Array<[string, string]>;
  /** Chunks as the gateway produces them (SSE frames of a stream as they arrive). Leaving the loop early cancels the body. */
  readonly body: AsyncIterable<Uint8Array>;
  readonly bodyUsed: boolean;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  json<T = unknown>(): Promise<T>;
  /** Drops the body unread; the request is recorded as abandoned by the client. */
  cancel(): void;
}

/** One token count set, in Anthropic's accounting (`input_tokens` excludes cache reads and writes). */
export interface TokenUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_creation_5m_input_tokens: number;
  cache_creation_1h_input_tokens: number;
  cache_read_input_tokens: number;
}

/** One entry of a request's decision chain (providers skipped, selected and attempted). */
export type DecisionChainEntry = Record<string, unknown>;

/** The canonical usage-record JSON (serde of gateway_core::usage::UsageRecord). */
export interface UsageRecord {
  request_id: string;
  /** RFC 3339. */
  created_at: string;
  user_id: number | null;
  key_id: number | null;
  provider_id: number | null;
  provider_name: string | null;
  method: string;
  endpoint: string;
  dialect: Dialect | null;
  original_model: string | null;
  forwarded_model: string | null;
  stream: boolean;
  status_code: number;
  outcome: 'success' | 'upstream_error' | 'rejected' | 'failed' | 'client_abort';
  usage: TokenUsage;
  /** Exact cost in nano-dollars; null when the model has no price. */
  cost: number | null;
  /** Decimal string. */
  cost_multiplier: string | null;
  duration_ms: number;
  ttfb_ms: number | null;
  ttft_ms: number | null;
  session_id: string | null;
  error: string | null;
  user_agent: string | null;
  decision_chain: DecisionChainEntry[];
  translation_notes: string[];
}

/** Options of `Gateway.handler`. */
export interface HandlerOptions {
  /** Stripped from the request path before routing, e.g. `/llm` (Express's `app.use` mount path is stripped by Express itself). */
  prefix?: string;
}

/** A `(req, res)` function for node:http, Express and Fastify. */
export type GatewayHandler = (req: IncomingMessage | any, res: ServerResponse | any, next?: unknown) => void;

/** Options of `Gateway.serve`. */
export interface ServeOptions {
  /** Default `127.0.0.1`. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
}

/** A server started by `Gateway.serve`; it keeps the process alive until closed or unref'd. */
export declare class GatewayServer {
  private constructor();
  /** `http://host:port`. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Stops accepting; requests in flight get `graceMs` (default 10 000) to finish, the rest are dropped. */
  close(options?: { graceMs?: number }): Promise<void>;
  unref(): this;
  ref(): this;
}

/** The gateway, in-process. */
export declare class Gateway {
  /**
   * @param config a TOML file path, TOML text (any string containing `=` or a newline), or an
   * object with the keys of the server's TOML import.
   * @throws on an invalid configuration or options (with `redisUrl`: an invalid URL; an
   * unreachable Redis only logs, and routing fails open until it answers).
   */
  constructor(config: string | URL | ConfigObject, options?: GatewayOptions);
  /** Serves one request in-process. Never rejects for gateway errors: they are responses in the caller's dialect. Rejects for a malformed method, path or header. */
  request(req: GatewayRequest): Promise<GatewayResponse>;
  /** A request handler for node:http, Express and Fastify; responses stream chunk by chunk. */
  handler(options?: HandlerOptions): GatewayHandler;
  /** Serves HTTP from Rust (not through the JS event loop). */
  serve(options?: ServeOptions): Promise<GatewayServer>;
  /** Receives every usage record, after its request ended. Returns an unsubscribe function. */
  onUsage(callback: (record: UsageRecord) => void): () => void;
}

/** A translated body and what the target dialect could not carry. */
export interface Translation<T = any> {
  body: T;
  notes: string[];
}

/** Translates a request body (object, JSON text or bytes) from one dialect to another. Throws on a body the source dialect cannot read. */
export declare function translateRequest<T = any>(
  body: object | string | Uint8Array,
  source: Dialect,
  target: Dialect,
): Translation<T>;

/** Translates a complete (non-stream) response body from one dialect to another. */
export declare function translateResponse<T = any>(
  body: object | string | Uint8Array,
  source: Dialect,
  target: Dialect,
): Translation<T>;

/** Token counts the mock reports, in Anthropic's vocabulary. */
export interface MockUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number;
  cache_creation_5m_input_tokens?: number;
  cache_creation_1h_input_tokens?: number;
  cache_read_input_tokens?: number;
}

/** A duration: milliseconds, or serde's form. */
export type MockDuration = number | { secs: number; nanos: number };

/** The mock's behaviour (gateway-mock MockBehavior's serde form); fields left out take their defaults. */
export interface MockBehavior {
  first_byte_delay?: MockDuration;
  /** Text deltas per streamed reply (default 3). */
  chunks?: number;
  chunk_delay?: MockDuration;
  force_status?: number | null;
  fake_200?: 'html' | 'json_error' | 'sse_error' | null;
  retry_after_secs?: number | null;
  reset_after_events?: number | null;
  expected_api_key?: string | null;
  reply_text?: string;
  usage?: MockUsage;
  model_override?: string | null;
}

/** A request the mock received. */
export interface MockReceivedRequest {
  method: string;
  /** Path and query. */
  path: string;
  headers: Record<string, string>;
  /** The body as text. */
  body: string;
}

/** A fake Anthropic / OpenAI Chat / Responses / Gemini upstream on a loopback port, for tests. */
export declare class MockUpstream {
  private constructor();
  static start(options?: { behavior?: MockBehavior; host?: string; port?: number }): Promise<MockUpstream>;
  /** Base URL without a trailing slash. */
  readonly url: string;
  setBehavior(behavior: MockBehavior): void;
  behavior(): Required<MockBehavior>;
  received(): MockReceivedRequest[];
  clearReceived(): void;
  /** Request recording on (default) or off, e.g. for long benchmarks. */
  setRecording(on: boolean): void;
  stop(): Promise<void>;
}
