/**
 * Test helpers for the product and view routes. Every file gets its own Redis key prefix (an env
 * with its own `REDIS_KEY_APP`, so its own services, cache entries, limiter and views stream): D1
 * is per file while Redis is shared by the run, so product ids and cached pages would otherwise
 * collide across files, and one file's cron would drain another's views into the wrong D1.
 * Calls go through `worker.fetch` with an execution context that is awaited, so `waitUntil` work
 * (cache writes, view counts) is done when a call returns.
 */
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { expect } from 'vitest';
import worker from '../../src/index.ts';
import { callWorker } from '../support/worker.ts';

/** This file's env: the test bindings with a key prefix of its own. */
export function fileEnv(overrides: Partial<Env> = {}): Env {
  return { ...env, REDIS_KEY_APP: `p${crypto.randomUUID().slice(0, 8)}`, ...overrides };
}

/** `<app>:<env>`, the prefix of every key the Worker writes for `e`. */
export const prefixOf = (e: Env) => `${e.REDIS_KEY_APP}:${e.APP_ENV}`;

export const ADMIN = { authorization: `Bearer ${env.ADMIN_TOKEN}` };

/** A client address nobody else uses, so the per-IP limit of one test never touches another. */
export function freshIp(): string {
  const [a = 0, b = 0, c = 0] = crypto.getRandomValues(new Uint8Array(3));
  return `10.${a}.${b}.${c}`;
}

export interface Call {
  env: Env;
  method?: string;
  /** JSON-encoded unless a string or a stream (sent as is, without Content-Length). */
  body?: unknown;
  ip?: string;
  headers?: Record<string, string>;
}

export interface Answer {
  res: Response;
  status: number;
  text: string;
  /** Parsed body, or undefined when it is not JSON. */
  body: unknown;
}

/** One request to the Worker; resolves once its `waitUntil` work is done too. */
export async function call(path: string, { env: e, method = 'GET', body, ip = freshIp(), headers = {} }: Call): Promise<Answer> {
  const encoded = body === undefined ? undefined : typeof body === 'string' || body instanceof ReadableStream ? body : JSON.stringify(body);
  return callWorker(e, path, { method, body: encoded, ip, headers, defaultContentType: 'application/json', readBeforeWait: true });
}

export interface ProductBody {
  id: number;
  name: string;
  price: number;
  stock: number;
  category: string;
}

/** A product created through the admin route (201 asserted). */
export async function createProduct(e: Env, fields: Partial<Omit<ProductBody, 'id'>> = {}): Promise<ProductBody> {
  const body = { name: `Test ${crypto.randomUUID().slice(0, 8)}`, category: 'toys', price: 12.5, stock: 10, ...fields };
  const r = await call('/products', { env: e, method: 'POST', body, headers: ADMIN });
  expect(r.status, r.text).toBe(201);
  return r.body as ProductBody;
}

/** The Worker's cron, as the runtime calls it. */
export async function runCron(e: Env): Promise<void> {
  const ctx = createExecutionContext();
  await worker.scheduled(createScheduledController({ cron: '* * * * *', scheduledTime: Date.now() }), e, ctx);
  await waitOnExecutionContext(ctx);
}

/** A problem+json answer with this status and code, and nothing a client should not see. */
export function expectProblem(r: Answer, status: number, code: string): Record<string, unknown> {
  expect(r.status, r.text).toBe(status);
  expect(r.res.headers.get('content-type')).toBe('application/problem+json');
  const body = r.body as Record<string, unknown>;
  expect(body).toMatchObject({ status, code });
  expect(r.text).not.toMatch(/\bat \S+:\d+|stack|UpstashError|D1_ERROR|SQLITE/i);
  expect(r.text).not.toContain(env.UPSTASH_REDIS_REST_TOKEN);
  expect(r.text).not.toContain(env.ADMIN_TOKEN);
  return body;
}
