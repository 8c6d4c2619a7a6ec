/**
 * Helpers of the gateway suite: real `@upstash/redis` clients pointed at a gateway, hand-made HTTP
 * requests for what the client cannot send, private gateways with their own settings and metrics,
 * a Prometheus text reader and an SSE line reader.
 *
 * The shared gateway (started by test/global-setup.ts, admin commands allowed) is used by test files
 * running in parallel, so anything that counts (metrics) or needs other settings starts a private
 * gateway in-process against the same Redis. `inject()` keys are typed in ../provided.d.ts.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from '@upstash/redis';
import { inject } from 'vitest';
import { loadConfig } from '../../gateway/config.ts';
import { startGateway, type RunningGateway } from '../../gateway/server.ts';

/** Where a client sends its requests. */
export interface Target {
  url: string;
  token: string;
}

/** The gateway started by globalSetup (GATEWAY_ALLOW_ADMIN_COMMANDS=true). */
export function shared(): Target {
  return { url: inject('gatewayUrl'), token: inject('gatewayToken') };
}

/** The Redis behind the shared gateway, as `redis://host:port`. */
export function redisUrl(): string {
  return inject('redisUrl');
}

/** A key prefix of its own for one test, so parallel files never touch each other's keys. */
export function prefix(): string {
  return `gwtest:${randomUUID()}:`;
}

/** One way of driving the client; the suite runs the command families under each. */
export interface ClientMode {
  name: string;
  autoPipelining: boolean;
  base64: boolean;
}

export const CLIENT_MODES: readonly ClientMode[] = [
  { name: 'auto-pipelining, base64', autoPipelining: true, base64: true },
  { name: 'auto-pipelining, plain JSON', autoPipelining: true, base64: false },
  { name: 'one request per command, base64', autoPipelining: false, base64: true },
  { name: 'one request per command, plain JSON', autoPipelining: false, base64: false },
];

export interface ClientOptions {
  /** @default true (the client's default) */
  autoPipelining?: boolean;
  /** `Upstash-Encoding: base64`. @default true (the client's default) */
  base64?: boolean;
  /** JSON.parse of every string reply. @default true (the client's default) */
  deserialize?: boolean;
}

/** A real `@upstash/redis` client against `target`. */
export function client(target: Target, options: ClientOptions = {}): Redis {
  if (!target?.url) throw new Error('client(): no target (a private gateway used before beforeAll ran?)');
  return new Redis({
    url: target.url,
    token: target.token,
    enableAutoPipelining: options.autoPipelining ?? true,
    responseEncoding: (options.base64 ?? true) ? 'base64' : false,
    automaticDeserialization: options.deserialize ?? true,
    enableTelemetry: false,
  });
}

/** A client in one of {@link CLIENT_MODES}. */
export function clientIn(mode: ClientMode, target: Target, deserialize = true): Redis {
  return client(target, { autoPipelining: mode.autoPipelining, base64: mode.base64, deserialize });
}

export interface RawResponse {
  status: number;
  headers: Headers;
  text: string;
  /** The body parsed as JSON, or `undefined` when it is not JSON. */
  json: unknown;
}

export interface RawOptions {
  /** Bearer token; `null` sends no authorization header. @default the target's token */
  token?: string | null;
  method?: string;
  /** Sent as is (no JSON encoding). */
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  /** Adds `Upstash-Encoding: base64`. */
  base64?: boolean;
}

/** A hand-made request, for what the client cannot produce (bad bodies, auth, path form, headers). */
export async function raw(target: Target, path: string, options: RawOptions = {}): Promise<RawResponse> {
  const headers: Record<string, string> = { ...options.headers };
  const token = options.token === undefined ? target.token : options.token;
  if (token !== null) headers['authorization'] = `Bearer ${token}`;
  if (options.base64) headers['upstash-encoding'] = 'base64';
  const init: RequestInit = { method: options.method ?? (options.body === undefined ? 'GET' : 'POST'), headers };
  if (options.body !== undefined) init.body = typeof options.body === 'string' ? options.body : new Uint8Array(options.body);
  const res = await fetch(`${target.url}${path}`, init);
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** POSTs `body` as JSON with `content-type: application/json`. */
export function post(target: Target, path: string, body: unknown, options: Omit<RawOptions, 'body'> = {}): Promise<RawResponse> {
  return raw(target, path, {
    ...options,
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', ...options.headers },
  });
}

/** `status text`, for failure messages. */
export function show(res: RawResponse): string {
  return `HTTP ${res.status}: ${res.text}`;
}

/** The `error` string of a `{"error": …}` body, or `undefined`. */
export function errorOf(res: RawResponse): string | undefined {
  const j = res.json;
  if (typeof j === 'object' && j !== null && !Array.isArray(j) && 'error' in j && typeof j.error === 'string') return j.error;
  return undefined;
}

export interface PrivateGateway extends Target {
  gateway: RunningGateway;
  /** What the gateway logged (it never reaches the test output). */
  logs: string[];
  close(): Promise<void>;
}

/**
 * Starts a gateway in this process on a free port, by default against the shared Redis with a
 * random token and default policy (admin commands denied). `env` is read by the real `loadConfig`;
 * `GATEWAY_TOKEN: ''` leaves the token to a tokens file.
 */
export async function privateGateway(env: Record<string, string> = {}): Promise<PrivateGateway> {
  const token = env['GATEWAY_TOKEN'] ?? randomUUID();
  const config = loadConfig({
    REDIS_URL: redisUrl(),
    GATEWAY_HOST: '127.0.0.1',
    ...env,
    GATEWAY_TOKEN: token,
    GATEWAY_PORT: '0',
  });
  const logs: string[] = [];
  const gateway = await startGateway(config, { log: (line) => logs.push(line) });
  return { url: gateway.url, token, gateway, logs, close: () => gateway.close() };
}

/** Writes a tokens file in a fresh temporary directory; `remove()` deletes it. */
export function tokensFile(doc: unknown): { path: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'gw-tokens-'));
  const path = join(dir, 'tokens.json');
  writeFileSync(path, JSON.stringify(doc));
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** `GET /metrics` of a gateway, as text. */
export async function scrape(target: { url: string }): Promise<string> {
  const res = await fetch(`${target.url}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}: ${await res.text()}`);
  return res.text();
}

function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
    if (m[1] !== undefined && m[2] !== undefined) out[m[1]] = m[2].replace(/\\(.)/g, '$1');
  }
  return out;
}

/** Sum of every series of `name` whose labels include `labels` (0 when there is none). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = parseLabels(m[2] ?? '');
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** Every `gateway_commands_total` series as command → count. */
export function commandCounts(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^gateway_commands_total\{command="([^"]*)"\}\s+(\S+)$/.exec(line);
    if (m?.[1] !== undefined) out.set(m[1], Number(m[2]));
  }
  return out;
}

/** What changed between two {@link commandCounts} snapshots (only commands that grew). */
export function commandDelta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** An open Server-Sent Events response read line by line. */
export interface SseStream {
  status: number;
  headers: Headers;
  /** Every line received so far. */
  lines: string[];
  /** Resolves once a line equal to `line` (or matching it) arrived; rejects if the stream ends first. */
  waitForLine(line: string | RegExp): Promise<string>;
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  close(): void;
}

/** Opens `path` with `POST []`, as the client does, and reads the event stream. */
export async function openSse(target: Target, path: string, options: { base64?: boolean } = {}): Promise<SseStream> {
  const controller = new AbortController();
  const headers: Record<string, string> = {
    authorization: `Bearer ${target.token}`,
    accept: 'text/event-stream',
    'content-type': 'application/json',
  };
  if (options.base64) headers['upstash-encoding'] = 'base64';
  const res = await fetch(`${target.url}${path}`, { method: 'POST', headers, body: '[]', signal: controller.signal });
  const lines: string[] = [];
  const waiters = new Set<{ test: (l: string) => boolean; resolve: (l: string) => void; reject: (e: Error) => void }>();
  let done = false;
  const ended = (async () => {
    if (!res.body) return;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        buffer += decoder.decode(value, { stream: true });
        const parts = buffer.split('\n');
        buffer = parts.pop() ?? '';
        for (const line of parts) {
          lines.push(line);
          for (const w of waiters) {
            if (w.test(line)) {
              waiters.delete(w);
              w.resolve(line);
            }
          }
        }
      }
    } catch {
      // aborted by close()
    } finally {
      done = true;
      for (const w of waiters) w.reject(new Error(`the stream ended before the line arrived; lines: ${JSON.stringify(lines)}`));
      waiters.clear();
    }
  })();
  return {
    status: res.status,
    headers: res.headers,
    lines,
    ended,
    waitForLine(line) {
      const test = (l: string) => (typeof line === 'string' ? l === line : line.test(l));
      const seen = lines.find(test);
      if (seen !== undefined) return Promise.resolve(seen);
      if (done) return Promise.reject(new Error(`the stream has ended; lines: ${JSON.stringify(lines)}`));
      return new Promise((resolve, reject) => waiters.add({ test, resolve, reject }));
    },
    close: () => controller.abort(),
  };
}

/** Subscribers of `channel` according to Redis (`PUBSUB NUMSUB`), through the gateway. */
export async function numsub(target: Target, channel: string): Promise<number> {
  const res = await post(target, '/', ['pubsub', 'numsub', channel]);
  const result = (res.json as { result?: unknown } | undefined)?.result;
  if (!Array.isArray(result) || typeof result[1] !== 'number') throw new Error(`unexpected PUBSUB NUMSUB answer: ${show(res)}`);
  return result[1];
}

/** A client subscriber (`redis.subscribe()` / `redis.psubscribe()`). */
export type Subscriber = ReturnType<Redis['subscribe']>;

/** The client's subscriber events this suite listens to. */
export interface SubscriberEvents {
  subscribe: number;
  psubscribe: number;
  message: { channel: string; message: unknown };
  pmessage: { pattern: string; channel: string; message: unknown };
  error: Error;
}

/** The next event of `type` on a client subscriber. */
export function nextEvent<K extends keyof SubscriberEvents>(sub: Subscriber, type: K): Promise<SubscriberEvents[K]> {
  return new Promise((resolve) => {
    let fired = false;
    sub.on(type, (event: unknown) => {
      if (fired) return;
      fired = true;
      resolve(event as SubscriberEvents[K]);
    });
  });
}

/** Every event of `type` on a client subscriber, in arrival order. */
export function collectEvents<K extends keyof SubscriberEvents>(sub: Subscriber, type: K): SubscriberEvents[K][] {
  const out: SubscriberEvents[K][] = [];
  sub.on(type, (event: unknown) => {
    out.push(event as SubscriberEvents[K]);
  });
  return out;
}

/**
 * Retries `assertion` until it passes, for at most `timeoutMs`, one attempt at a time (unlike
 * `vi.waitFor`, which may start an attempt while the previous one is still waiting on the gateway,
 * leaving a request in flight when the test moves on).
 */
export async function eventually(assertion: () => unknown, { timeoutMs = 5_000, intervalMs = 50 } = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await assertion();
      return;
    } catch (err) {
      if (Date.now() >= deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }
}
