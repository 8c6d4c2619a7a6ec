/**
 * Test helpers for the checkout, leaderboard and events routes: an env with a Redis key prefix of
 * its own, calls to the Worker carrying a `sid` cookie, sessions holding a given cart (written by
 * the app's own session middleware, so they are exactly what the cart routes would leave), and
 * products created in D1 for one test.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { Hono } from 'hono';
import type { AppEnv } from '../../src/env.ts';
import { provideServices, sessions } from '../../src/middleware.ts';
import { services } from '../../src/services.ts';
import { callWorker, sidCookie } from '../support/worker.ts';

/** This file's env: its own `REDIS_KEY_APP`, hence its own keys, limiters, leaderboard and channel. */
export function ownEnv(): Env {
  return { ...env, REDIS_KEY_APP: `c${crypto.randomUUID().slice(0, 8)}` };
}

/** A plain client for assertions (no batching). */
export const redis = new Redis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });
export const gatewayUrl = env.UPSTASH_REDIS_REST_URL;

/** A client IPv4 address of its own (198.18.0.0/15), so no test shares a per-IP limit. */
export function freshIp(): string {
  const [a, b, c] = crypto.getRandomValues(new Uint8Array(3));
  return `198.${18 + (a! & 1)}.${b}.${c}`;
}

export interface Answer {
  res: Response;
  status: number;
  text: string;
  body: unknown;
}

export interface Call {
  method?: string;
  body?: string;
  sid?: string;
  ip: string;
  headers?: Record<string, string>;
}

/** A request to the Worker with `shop`'s env; resolves once its `waitUntil` work is done too. */
export async function call(shop: Env, path: string, { method = 'GET', body, sid, ip, headers = {} }: Call): Promise<Answer> {
  return callWorker(shop, path, { method, body, sid, ip, headers });
}

/** POST /checkout with a key. */
export function checkout(shop: Env, sid: string | undefined, key: string | undefined, ip: string, extra: Omit<Call, 'ip' | 'sid'> = {}): Promise<Answer> {
  return call(shop, '/checkout', { method: 'POST', ip, ...(sid !== undefined ? { sid } : {}), ...extra, headers: { ...(key !== undefined ? { 'idempotency-key': key } : {}), ...extra.headers } });
}

// The app's session middleware on a tiny app of its own: it writes sessions the Worker reads.
const sessionApp = new Hono<AppEnv>();
sessionApp.use(provideServices, sessions);
sessionApp.post('/', async (c) => {
  const { cart, user } = await c.req.json<{ cart?: Record<string, number>; user?: string }>();
  const s = c.get('session');
  s.set('cart', cart);
  if (user !== undefined) s.setUser(user);
  return c.body(null, 204);
});
sessionApp.get('/', async (c) => {
  const s = c.get('session');
  const [cart, handle] = await Promise.all([s.get('cart'), s.handle()]);
  return c.json({ cart: cart ?? null, handle: handle ?? null });
});

/** Stores `cart` (and a user) in the session `sid`, or in a new one; answers the session's `sid`. */
export async function withCart(shop: Env, cart: Record<string, number> | undefined, options: { sid?: string; user?: string } = {}): Promise<string> {
  const res = await sessionApp.request('/', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(options.sid !== undefined ? { cookie: `sid=${options.sid}` } : {}) },
    body: JSON.stringify({ cart, ...(options.user !== undefined ? { user: options.user } : {}) }),
  }, shop);
  if (res.status !== 204) throw new Error(`seeding the session failed: ${res.status} ${await res.text()}`);
  const { line, value } = sidCookie(res);
  const sid = line === undefined ? options.sid : value;
  if (!sid) throw new Error('no session cookie');
  return sid;
}

/** What the session `sid` holds now. */
export async function sessionState(shop: Env, sid: string): Promise<{ cart: Record<string, number> | null; handle: string | null }> {
  const res = await sessionApp.request('/', { headers: { cookie: `sid=${sid}` } }, shop);
  return res.json();
}

/** A product of this test's own in D1; answers its id. */
export async function createProduct(shop: Env, { priceCents = 1_000, stock = 10 }: { priceCents?: number; stock?: number } = {}): Promise<number> {
  const now = Date.now();
  const row = await shop.DB.prepare('INSERT INTO products (name, category, price_cents, stock, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id')
    .bind(`Test product ${crypto.randomUUID()}`, 'toys', priceCents, stock, now)
    .first<{ id: number }>();
  if (!row) throw new Error('no product id');
  return row.id;
}

export async function stockOf(shop: Env, id: number): Promise<number | undefined> {
  return (await shop.DB.prepare('SELECT stock FROM products WHERE id = ?1').bind(id).first<{ stock: number }>())?.stock;
}

/** The orders holding a line of `productId`, with that line's quantity. */
export async function ordersOf(shop: Env, productId: number): Promise<{ id: string; quantity: number; total_cents: number; user_id: number | null }[]> {
  const { results } = await shop.DB.prepare(`SELECT o.id, i.quantity, o.total_cents, o.user_id FROM orders AS o JOIN order_items AS i ON i.order_id = o.id
      WHERE i.product_id = ?1 ORDER BY o.created_at`).bind(productId).all<{ id: string; quantity: number; total_cents: number; user_id: number | null }>();
  return results;
}

/** The keys of `shop`'s env (prefix of its own). */
export const keysOf = (shop: Env) => services(shop).keys;

/** Subscribers of `channel` now (PUBSUB NUMSUB through the gateway). */
export async function numsub(channel: string): Promise<number> {
  const reply = await redis.exec<[string, number]>(['pubsub', 'numsub', channel]);
  return Number(reply[1]);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it holds; throws after `timeoutMs`. */
export async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  for (let i = 0; i < timeoutMs / 50; i++) {
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`never happened: ${what}`);
}

/** An error body: problem+json with the code and no stack trace. */
export function expectProblem(a: Answer, status: number, code: string): Record<string, unknown> {
  if (a.status !== status) throw new Error(`expected ${status}, got ${a.status}: ${a.text}`);
  if (a.res.headers.get('content-type') !== 'application/problem+json') throw new Error(`not problem+json: ${a.res.headers.get('content-type')} ${a.text}`);
  const body = a.body as Record<string, unknown>;
  if (body['code'] !== code) throw new Error(`expected code ${code}: ${a.text}`);
  if (/\bat \S+:\d+|stack/i.test(a.text)) throw new Error(`a stack trace leaked: ${a.text}`);
  return body;
}
