/**
 * Test helpers for the auth and cart routes: calls to the Worker with a cookie carried by hand (the
 * cookie is `sid` since APP_ENV=development), a fresh username and client IP per test, and a
 * registered + logged-in user in one call.
 */
import { env } from 'cloudflare:workers';
import { expect } from 'vitest';
import { callWorker, sidCookie } from '../support/worker.ts';

/**
 * This file's env: the test bindings with a Redis key prefix of its own (`REDIS_KEY_APP`), hence
 * its own services, sessions, user indexes, cache entries, limiters and views stream. Each test
 * file gets its own D1, so ids restart at the same numbers in every file, while Redis is shared by
 * the run: without this, user 1 of one file would share a session index with user 1 of another.
 */
export const shopEnv: Env = { ...env, REDIS_KEY_APP: `a${crypto.randomUUID().slice(0, 8)}` };

export interface Call {
  method?: string;
  /** JSON-encoded unless a string. */
  body?: unknown;
  /** The `sid` value to send. */
  sid?: string | undefined;
  /** CF-Connecting-IP; every test passes its own so the per-IP limit of one never touches another. */
  ip: string;
  headers?: Record<string, string>;
  /** Another env for this call (e.g. pointing at the gateway whose Redis is down). @default shopEnv */
  env?: Env;
}

export interface Answer {
  res: Response;
  status: number;
  text: string;
  /** Parsed body, or undefined when it is not JSON. */
  body: unknown;
  /** The `sid` cookie this response sets: a value, '' when it clears it, undefined when silent. */
  sid: string | undefined;
  /** The whole Set-Cookie line for `sid`. */
  cookieLine: string | undefined;
}

/** A request to the Worker; it resolves once the request's `waitUntil` work is done too. */
export async function call(path: string, { method = 'GET', body, sid, ip, headers = {}, env: own = shopEnv }: Call): Promise<Answer> {
  const encoded = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const answer = await callWorker(own, path, { method, body: encoded, sid, ip, headers, defaultContentType: 'application/json' });
  const { line: cookieLine, value: sidValue } = sidCookie(answer.res);
  return { ...answer, sid: sidValue, cookieLine };
}

/** A username nobody else uses: `t_` + 20 hex digits (valid: 3..32 of [A-Za-z0-9_.-]). */
export function freshName(prefix = 't'): string {
  return `${prefix}_${crypto.randomUUID().replace(/-/g, '').slice(0, 20)}`;
}

/** A client IPv4 address of its own (198.18.0.0/15, the benchmarking range). */
export function freshIp(): string {
  const [a, b, c] = crypto.getRandomValues(new Uint8Array(3));
  return `198.${18 + (a! & 1)}.${b}.${c}`;
}

export const PASSWORD = 'correct horse battery staple';

/** Registers a fresh user (201 checked). */
export async function register(ip: string, username = freshName(), password = PASSWORD): Promise<{ id: number; username: string; password: string }> {
  const r = await call('/auth/register', { method: 'POST', ip, body: { username, password } });
  expect(r.status, r.text).toBe(201);
  return { ...(r.body as { id: number; username: string }), password };
}

/** Logs in (200 and a new cookie checked) and answers the new `sid`. */
export async function login(ip: string, username: string, password = PASSWORD, sid?: string, userAgent?: string): Promise<string> {
  const r = await call('/auth/login', { method: 'POST', ip, sid, body: { username, password }, ...(userAgent ? { headers: { 'user-agent': userAgent } } : {}) });
  expect(r.status, r.text).toBe(200);
  expect(r.sid, r.cookieLine).toMatch(/^[A-Za-z0-9_-]{43}$/);
  return r.sid!;
}

/** A fresh user, registered and logged in: its id, name and session cookie. */
export async function loggedIn(ip: string): Promise<{ id: number; username: string; sid: string }> {
  const u = await register(ip);
  return { id: u.id, username: u.username, sid: await login(ip, u.username) };
}

/** Asserts an RFC 9457 problem body with this status and code, and no stack trace in it. */
export function expectProblem(r: Answer, status: number, code: string): Record<string, unknown> {
  expect(r.status, r.text).toBe(status);
  expect(r.res.headers.get('content-type')).toBe('application/problem+json');
  expect(r.text).not.toMatch(/\bat \S+:\d+|stack/i);
  const body = r.body as Record<string, unknown>;
  expect(body).toMatchObject({ status, code });
  return body;
}

/** The fields a 400 names, as `in:field`. */
export function badFields(r: Answer): string[] {
  const errors = (r.body as { errors?: { in: string; field: string }[] }).errors ?? [];
  return errors.map((e) => `${e.in}:${e.field}`).sort();
}

export { env };

/** A product of its own in D1 (the id comes from AUTOINCREMENT, so parallel files never collide). */
export async function makeProduct({ name = `Test product ${crypto.randomUUID().slice(0, 8)}`, priceCents = 1234, stock = 10, category = 'toys' } = {}): Promise<{ id: number; name: string; priceCents: number; stock: number }> {
  const now = Date.now();
  const row = await env.DB.prepare('INSERT INTO products (name, category, price_cents, stock, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id')
    .bind(name, category, priceCents, stock, now, now)
    .first<{ id: number }>();
  return { id: row!.id, name, priceCents, stock };
}

export type CartBody = { items: { productId: number; quantity: number; name: string; price: number; lineTotal: number }[]; total: number };

/**
 * The real D1 with one fault: every statement it prepares fails when run, as when D1 is unreachable.
 * Everything else about `env` is untouched.
 */
export function envWithBrokenD1(): Env {
  const fail = () => Promise.reject(new Error('D1_ERROR: Network connection lost.'));
  const statement = { bind: () => statement, first: fail, all: fail, run: fail, raw: fail };
  const DB = new Proxy(env.DB, { get: (target, prop) => (prop === 'prepare' ? () => statement : Reflect.get(target, prop)) });
  return { ...shopEnv, DB };
}
