/**
 * The product routes on their happy paths: pages and products served through the cache (MISS,
 * then HIT; STALE while one refresh runs; one MISS for ten concurrent first requests), ETag and 304,
 * admin writes that invalidate and publish in one round trip, and the round trips of a warm
 * `GET /products/:id` (the hard requirement), with the commands each one carries.
 */
import { Redis } from '@upstash/redis/cloudflare';
import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import worker from '../../src/index.ts';
import { PRODUCT_CACHE_CONTROL } from '../../src/functions/products.ts';
import { countTrips } from '../support/round-trips.ts';
import { ADMIN, call, createProduct, fileEnv, freshIp, prefixOf, type ProductBody } from './products.support.ts';

const e = fileEnv();
const prefix = prefixOf(e);
const url = env.UPSTASH_REDIS_REST_URL;
const redis = new Redis({ url, token: env.UPSTASH_REDIS_REST_TOKEN });

interface PageBody {
  items: ProductBody[];
  page: number;
  pageSize: number;
  total: number;
  totalPages: number;
}

const sorted = (xs: string[]) => [...xs].sort();

describe('GET /products', () => {
  it('answers the first page of 20 by default, MISS then HIT, with validators', async () => {
    const first = await call('/products', { env: e });
    expect(first.status, first.text).toBe(200);
    const page = first.body as PageBody;
    const { n } = (await env.DB.prepare('SELECT count(*) AS n FROM products').first<{ n: number }>())!;
    expect(page).toMatchObject({ page: 1, pageSize: 20, total: n, totalPages: Math.ceil(n / 20) });
    expect(page.items).toHaveLength(20);
    expect(page.items[0]).toEqual({ id: 1, name: 'Lightweight Monitor 1', price: 330.57, stock: 109, category: 'electronics' });
    expect(first.res.headers.get('x-cache')).toBe('MISS');
    expect(first.res.headers.get('cache-control')).toBe(PRODUCT_CACHE_CONTROL);
    expect(first.res.headers.get('etag')).toMatch(/^"[0-9a-f]{32}"$/);

    const again = await call('/products', { env: e });
    expect(again.res.headers.get('x-cache')).toBe('HIT');
    expect(again.body).toEqual(page);
    expect(again.res.headers.get('etag')).toBe(first.res.headers.get('etag'));
  });

  it('filters by category and pages; a page past the end is empty', async () => {
    const { n } = (await env.DB.prepare("SELECT count(*) AS n FROM products WHERE category = 'books'").first<{ n: number }>())!;
    const r = await call('/products?category=books&page=2&pageSize=7', { env: e });
    expect(r.status, r.text).toBe(200);
    const page = r.body as PageBody;
    expect(page).toMatchObject({ page: 2, pageSize: 7, total: n, totalPages: Math.ceil(n / 7) });
    expect(page.items).toHaveLength(7);
    expect(page.items.every((p) => p.category === 'books')).toBe(true);
    const ids = (await env.DB.prepare("SELECT id FROM products WHERE category = 'books' ORDER BY id LIMIT 7 OFFSET 7").all<{ id: number }>()).results.map((x) => x.id);
    expect(page.items.map((p) => p.id)).toEqual(ids);

    const past = await call(`/products?category=books&page=${page.totalPages + 1}&pageSize=7`, { env: e });
    expect(past.body).toMatchObject({ items: [], total: n });
  });

  it('a product write retires every cached page (the `products` tag)', async () => {
    const before = (await call('/products?category=grocery&pageSize=100&page=1', { env: e })).body as PageBody;
    expect((await call('/products?category=grocery&pageSize=100&page=1', { env: e })).res.headers.get('x-cache')).toBe('HIT');
    const p = await createProduct(e, { category: 'grocery' });
    const after = await call(`/products?category=grocery&pageSize=100&page=${Math.ceil((before.total + 1) / 100)}`, { env: e });
    expect(after.res.headers.get('x-cache')).toBe('MISS');
    expect((after.body as PageBody).total).toBe(before.total + 1);
    expect((after.body as PageBody).items.at(-1)).toEqual(p);
    expect((await call('/products?category=grocery&pageSize=100&page=1', { env: e })).res.headers.get('x-cache')).toBe('MISS');
  });
});

describe('GET /products/:id', () => {
  it('loads once (MISS), then serves from Redis (HIT) the same body and ETag, price in currency units', async () => {
    const first = await call('/products/3', { env: e });
    expect(first.status, first.text).toBe(200);
    expect(first.body).toEqual({ id: 3, name: 'Modern Chair 3', price: 166.12, stock: 143, category: 'home' });
    expect(first.res.headers.get('x-cache')).toBe('MISS');
    expect(first.res.headers.get('cache-control')).toBe('public, no-cache');
    const etag = first.res.headers.get('etag');
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/);

    const hit = await call('/products/3', { env: e });
    expect(hit.res.headers.get('x-cache')).toBe('HIT');
    expect(hit.body).toEqual(first.body);
    expect(hit.res.headers.get('etag')).toBe(etag);
    expect(Number(hit.res.headers.get('age'))).toBeGreaterThanOrEqual(0);
    // The entry lives for the hour plus the stale window (jitter ±10 %).
    const pttl = await redis.pttl(`${prefix}:cache:{product:3}`);
    expect(pttl).toBeGreaterThan(3_600_000 * 0.9);
    expect(pttl).toBeLessThanOrEqual(3_600_000 * 1.1 + 300_000);
  });

  it('answers 304 with the validators and no body when If-None-Match matches (weak, listed or *)', async () => {
    const p = await createProduct(e);
    const first = await call(`/products/${p.id}`, { env: e });
    const etag = first.res.headers.get('etag')!;
    for (const inm of [etag, `W/${etag}`, `"nope", ${etag}`, '*']) {
      const r = await call(`/products/${p.id}`, { env: e, headers: { 'if-none-match': inm } });
      expect(r.status, inm).toBe(304);
      expect(r.text).toBe('');
      expect(r.res.headers.get('etag')).toBe(etag);
      expect(r.res.headers.get('x-cache')).toBe('HIT');
      expect(r.res.headers.get('cache-control')).toBe(PRODUCT_CACHE_CONTROL);
    }
    const changed = await call(`/products/${p.id}`, { env: e, headers: { 'if-none-match': '"0123456789abcdef0123456789abcdef"' } });
    expect(changed.status).toBe(200);
    expect(changed.body).toEqual(p);
  });

  it('ten concurrent first requests: exactly one MISS (the one that ran the loader), the same product for all', async () => {
    const p = await createProduct(e);
    const answers = await Promise.all(Array.from({ length: 10 }, () => call(`/products/${p.id}`, { env: e })));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    const xcache = answers.map((a) => a.res.headers.get('x-cache'));
    expect(xcache.filter((x) => x === 'MISS'), xcache.join()).toHaveLength(1);
    expect(xcache.filter((x) => x === 'HIT')).toHaveLength(9);
    for (const a of answers) expect(a.body).toEqual(p);
    expect(new Set(answers.map((a) => a.res.headers.get('etag'))).size).toBe(1);
  });

  it('serves a stale entry (STALE) while one refresh runs, then the refreshed one (HIT)', async () => {
    const p = await createProduct(e, { name: 'Fresh name' });
    const old = { ...p, name: 'Old name' };
    // An entry whose fresh time has passed but whose stale window has not, in the cache's own envelope.
    const now = Date.now();
    const envelope = `{"c":${now - 3_700_000},"f":${now - 100_000},"s":${now + 200_000},"v":${JSON.stringify({ body: old, etag: '"00000000000000000000000000000000"' })},"t":{}}`;
    await redis.set(`${prefix}:cache:{product:${p.id}}`, envelope, { px: 200_000 });
    const stale = await call(`/products/${p.id}`, { env: e });
    expect(stale.res.headers.get('x-cache')).toBe('STALE');
    expect(stale.body).toEqual(old);
    const fresh = await call(`/products/${p.id}`, { env: e });
    expect(fresh.res.headers.get('x-cache')).toBe('HIT');
    expect(fresh.body).toEqual(p);
  });
});

describe('admin writes', () => {
  it('POST creates (201, Location), and the product is readable at once', async () => {
    const r = await call('/products', { env: e, method: 'POST', headers: ADMIN, body: { name: '  Padded name ', category: 'sports', price: 19.99, stock: 3 } });
    expect(r.status, r.text).toBe(201);
    const p = r.body as ProductBody;
    expect(p).toEqual({ id: expect.any(Number), name: 'Padded name', category: 'sports', price: 19.99, stock: 3 });
    expect(r.res.headers.get('location')).toBe(`/products/${p.id}`);
    expect(await env.DB.prepare('SELECT price_cents FROM products WHERE id = ?').bind(p.id).first('price_cents')).toBe(1999);
    expect((await call(`/products/${p.id}`, { env: e })).body).toEqual(p);
  });

  it('PATCH then GET shows the new value; invalidate + tag + product.updated go out in ONE round trip', async () => {
    const p = await createProduct(e, { price: 5, stock: 2 });
    expect((await call(`/products/${p.id}`, { env: e })).res.headers.get('x-cache')).toBe('MISS');
    expect((await call(`/products/${p.id}`, { env: e })).res.headers.get('x-cache')).toBe('HIT');

    const channel = `${prefix}:events:products`;
    const sub = redis.subscribe<{ type: string; id: number; at: number }>(channel);
    await new Promise((resolve) => sub.on('subscribe', resolve));
    const message = new Promise((resolve) => sub.on('message', ({ message }) => resolve(message)));
    try {
      const ctx = createExecutionContext();
      const patch = new Request(`http://shop.test/products/${p.id}`, {
        method: 'PATCH',
        headers: { ...ADMIN, 'content-type': 'application/json', 'cf-connecting-ip': freshIp() },
        body: JSON.stringify({ price: 7.25, name: 'Renamed' }),
      });
      const { result: res, trips } = await countTrips(url, async () => worker.fetch(patch, e, ctx));
      await waitOnExecutionContext(ctx);
      expect(res.status, await res.clone().text()).toBe(200);
      expect(await res.json()).toEqual({ ...p, price: 7.25, name: 'Renamed' });
      // The limit check (a write waits for it), then the three invalidation commands and the event.
      expect(trips.map((t) => sorted(t.commands))).toEqual([['evalsha'], ['publish', 'publish', 'publish', 'set', 'set', 'unlink']]);
      expect(await message).toEqual({ type: 'product.updated', id: p.id, at: expect.any(Number) });
    } finally {
      await sub.unsubscribe();
    }
    const after = await call(`/products/${p.id}`, { env: e });
    expect(after.res.headers.get('x-cache')).toBe('MISS');
    expect(after.body).toEqual({ ...p, price: 7.25, name: 'Renamed' });
  });

  it('DELETE removes the product (204), its cache entry and its views, and publishes product.deleted', async () => {
    const p = await createProduct(e);
    await call(`/products/${p.id}`, { env: e });
    const channel = `${prefix}:events:products`;
    const sub = redis.subscribe<{ type: string; id: number }>(channel);
    await new Promise((resolve) => sub.on('subscribe', resolve));
    const message = new Promise((resolve) => sub.on('message', ({ message }) => resolve(message)));
    try {
      const r = await call(`/products/${p.id}`, { env: e, method: 'DELETE', headers: ADMIN });
      expect(r.status, r.text).toBe(204);
      expect(r.text).toBe('');
      expect(await message).toMatchObject({ type: 'product.deleted', id: p.id });
    } finally {
      await sub.unsubscribe();
    }
    expect(await env.DB.prepare('SELECT count(*) AS n FROM products WHERE id = ?').bind(p.id).first('n')).toBe(0);
    expect((await call(`/products/${p.id}`, { env: e })).status).toBe(404);
  });
});

/** A live session in Redis, as the session middleware stores it, and its cookie value. */
async function liveSession(): Promise<string> {
  const id = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(id)));
  const hash = btoa(String.fromCharCode(...digest)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const key = `${prefix}:sess:${hash}`;
  const now = Date.now();
  await redis.hset(key, { _created: now, _seen: now, cart: '{"1":2}' });
  await redis.pexpire(key, 1_800_000);
  return id;
}

describe('round trips of a warm cached GET /products/:id', () => {
  /** Critical path of the response, and every gateway request including the `waitUntil` work. */
  async function measure(path: string, headers: Record<string, string>) {
    const ctx = createExecutionContext();
    const req = new Request(`http://shop.test${path}`, { headers: { 'cf-connecting-ip': freshIp(), ...headers } });
    const all = await countTrips(url, async () => {
      const response = await countTrips(url, async () => worker.fetch(req, e, ctx));
      await waitOnExecutionContext(ctx);
      return response;
    });
    return { response: all.result, all };
  }

  async function warm(path: string) {
    await call(path, { env: e }); // loads and stores the entry; loads the limiter's script
    expect((await call(path, { env: e })).res.headers.get('x-cache')).toBe('HIT');
  }

  it('anonymous: 1 round trip on the critical path (limit check + cache read), 2 in all (the view count)', async () => {
    const p = await createProduct(e);
    await warm(`/products/${p.id}`);
    const { response, all } = await measure(`/products/${p.id}`, {});
    expect(response.result.status).toBe(200);
    expect(response.result.headers.get('x-cache')).toBe('HIT');
    expect(response.criticalPath).toBe(1);
    // Critical: the rate limit script and the cache read script, in ONE HTTP request.
    expect(response.trips.filter((t) => t.beforeResult).map((t) => t.commands)).toEqual([['evalsha', 'evalsha']]);
    // In all: that, and the view count (one script: XADD + HINCRBY) in waitUntil.
    expect(all.count).toBeLessThanOrEqual(2);
    expect(all.trips.map((t) => t.commands)).toEqual([['evalsha', 'evalsha'], ['evalsha']]);
  });

  it('with a session cookie: the same 1 on the critical path and 2 in all (the session is never loaded)', async () => {
    const p = await createProduct(e);
    await warm(`/products/${p.id}`);
    const sid = await liveSession();
    const { response, all } = await measure(`/products/${p.id}`, { cookie: `sid=${sid}` });
    expect(response.result.status).toBe(200);
    expect(response.result.headers.get('set-cookie')).toBeNull();
    expect(response.criticalPath).toBe(1);
    expect(response.trips.filter((t) => t.beforeResult).map((t) => t.commands)).toEqual([['evalsha', 'evalsha']]);
    expect(all.count).toBeLessThanOrEqual(3);
    expect(all.trips.map((t) => t.commands)).toEqual([['evalsha', 'evalsha'], ['evalsha']]);
  });

  it('a warm page of GET /products is 1 round trip: limit check, page read and tag version together', async () => {
    await warm('/products?category=toys&page=3');
    const { response, all } = await measure('/products?category=toys&page=3', {});
    expect(response.result.headers.get('x-cache')).toBe('HIT');
    expect(response.criticalPath).toBe(1);
    expect(all.trips.map((t) => sorted(t.commands))).toEqual([['evalsha', 'evalsha', 'set']]);
  });
});

describe('documentation', () => {
  it('/openapi.json describes the product routes from their schemas', async () => {
    const r = await call('/openapi.json', { env: e });
    const doc = r.body as { paths: Record<string, Record<string, { parameters: { name: string; in: string }[]; security?: unknown; requestBody?: unknown }>> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/products', '/products/{id}', '/products/{id}/views']));
    expect(doc.paths['/products']?.['get']?.parameters.map((p) => `${p.in}:${p.name}`)).toEqual(['query:category', 'query:page', 'query:pageSize']);
    expect(doc.paths['/products/{id}']?.['get']?.parameters.map((p) => `${p.in}:${p.name}`)).toEqual(['path:id']);
    expect(doc.paths['/products/{id}']?.['patch']?.security).toEqual([{ adminToken: [] }]);
    expect(doc.paths['/products']?.['post']?.requestBody).toBeDefined();
  });
});
