/**
 * /cart happy paths: the cart lives in the session (created on the first add), lines are priced from
 * the product cache with one D1 query for what the cache lacks, and the round trips of a GET.
 */
import { describe, expect, test } from 'vitest';
import { countTrips } from '../support/round-trips.ts';
import { call, env, freshIp, makeProduct, type CartBody } from './auth.support.ts';

async function add(ip: string, sid: string | undefined, productId: number, quantity: number) {
  const r = await call('/cart/items', { method: 'POST', ip, sid, body: { productId, quantity } });
  expect(r.status, r.text).toBe(200);
  return r;
}

async function cartOf(ip: string, sid: string | undefined): Promise<CartBody> {
  const r = await call('/cart', { ip, sid });
  expect(r.status, r.text).toBe(200);
  expect(r.res.headers.get('cache-control')).toBe('no-store');
  return r.body as CartBody;
}

describe('GET /cart', () => {
  test('an anonymous visitor has an empty cart, gets no cookie, and costs only the rate limit check', async () => {
    const ip = freshIp();
    await call('/cart', { ip }); // loads the limiter's script into Redis if no test has yet
    const counted = await countTrips(env.UPSTASH_REDIS_REST_URL, () => call('/cart', { ip }));
    expect(counted.result.status, counted.result.text).toBe(200);
    expect(counted.result.body).toEqual({ items: [], total: 0 });
    expect(counted.result.cookieLine).toBeUndefined();
    expect(counted.trips.map((t) => t.commands)).toEqual([['evalsha']]);
  });

  test('prices lines from the product cache, reads the rest from D1, in 2 round trips', async () => {
    const ip = freshIp();
    const cached = await makeProduct({ priceCents: 1999, stock: 50 });
    const fromDb = await makeProduct({ priceCents: 250, stock: 50 });
    const first = await add(ip, undefined, cached.id, 2);
    const sid = first.sid!;
    await add(ip, sid, fromDb.id, 3);
    // GET /products/:id caches the product (its write runs in waitUntil, which `call` awaits) ...
    const shown = await call(`/products/${cached.id}`, { ip });
    expect(shown.status, shown.text).toBe(200);
    // ... then both rows change behind the cache's back: only the uncached one shows it.
    await env.DB.prepare("UPDATE products SET name = name || ' (renamed)' WHERE id IN (?, ?)").bind(cached.id, fromDb.id).run();
    await call('/cart', { ip, sid }); // every script in Redis's cache before counting (no NOSCRIPT detour)

    const counted = await countTrips(env.UPSTASH_REDIS_REST_URL, () => call('/cart', { ip, sid }));
    expect(counted.result.status, counted.result.text).toBe(200);
    expect(counted.result.body).toEqual({
      items: [
        { productId: cached.id, quantity: 2, name: cached.name, price: 19.99, lineTotal: 39.98 },
        { productId: fromDb.id, quantity: 3, name: `${fromDb.name} (renamed)`, price: 2.5, lineTotal: 7.5 },
      ],
      total: 47.48,
    });
    // 1: the per-IP check and the session load together (GET runs its handler beside the check);
    // 2: one read script per line's cache entry.
    expect(counted.trips.map((t) => [...t.commands].sort())).toEqual([['evalsha', 'evalsha_ro'], ['evalsha', 'evalsha']]);
    expect(counted.count).toBe(2);
    expect(counted.criticalPath).toBe(2);
  });

  test('a product the cache knows is gone is left out without asking D1', async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const { sid } = await add(ip, undefined, p.id, 1);
    await env.DB.prepare('DELETE FROM products WHERE id = ?').bind(p.id).run();
    // The products route caches "no such product" (a negative entry) ...
    expect((await call(`/products/${p.id}`, { ip })).status).toBe(404);
    // ... and were D1 asked, a row put back would show up; the cart trusts the cache instead.
    const now = Date.now();
    await env.DB.prepare("INSERT INTO products (id, name, category, price_cents, stock, created_at, updated_at) VALUES (?, 'back', 'toys', 1, 1, ?, ?)").bind(p.id, now, now).run();
    expect((await cartOf(ip, sid)).items).toEqual([]);
  });

  test('adds money in cents: 3 × 0.10 is 0.30', async () => {
    const ip = freshIp();
    const p = await makeProduct({ priceCents: 10, stock: 10 });
    const q = await makeProduct({ priceCents: 20, stock: 10 });
    const { sid } = await add(ip, undefined, p.id, 3);
    await add(ip, sid, q.id, 1);
    const cart = await cartOf(ip, sid);
    expect(cart.items.map((i) => i.lineTotal)).toEqual([0.3, 0.2]);
    expect(cart.total).toBe(0.5);
  });

  test('leaves out a product deleted since it was added', async () => {
    const ip = freshIp();
    const gone = await makeProduct();
    const kept = await makeProduct();
    const { sid } = await add(ip, undefined, gone.id, 1);
    await add(ip, sid, kept.id, 1);
    await env.DB.prepare('DELETE FROM products WHERE id = ?').bind(gone.id).run();
    expect((await cartOf(ip, sid)).items.map((i) => i.productId)).toEqual([kept.id]);
  });
});

describe('POST /cart/items', () => {
  test('the first add starts a session and sets its cookie; later adds keep it', async () => {
    const ip = freshIp();
    const p = await makeProduct({ stock: 20 });
    const first = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 2 } });
    expect(first.status, first.text).toBe(200);
    expect(first.body).toEqual({ productId: p.id, quantity: 2 });
    expect(first.cookieLine).toMatch(/^sid=[A-Za-z0-9_-]{43}; Max-Age=\d+; Path=\/; HttpOnly; SameSite=Lax$/);
    const second = await add(ip, first.sid, p.id, 1);
    expect(second.body).toEqual({ productId: p.id, quantity: 3 });
    expect(second.sid ?? first.sid).toBe(first.sid);
    expect(await cartOf(ip, first.sid)).toEqual({ items: [{ productId: p.id, quantity: 3, name: p.name, price: 12.34, lineTotal: 37.02 }], total: 37.02 });
  });

  test('adding to a line caps it at 99', async () => {
    const ip = freshIp();
    const p = await makeProduct({ stock: 1000 });
    const { sid } = await add(ip, undefined, p.id, 60);
    const r = await add(ip, sid, p.id, 60);
    expect(r.body).toEqual({ productId: p.id, quantity: 99 });
    expect((await cartOf(ip, sid)).items[0]?.quantity).toBe(99);
  });

  test('two visitors have two carts', async () => {
    const p = await makeProduct();
    const q = await makeProduct();
    const a = await add(freshIp(), undefined, p.id, 1);
    const b = await add(freshIp(), undefined, q.id, 2);
    expect(a.sid).not.toBe(b.sid);
    expect((await cartOf(freshIp(), a.sid)).items.map((i) => i.productId)).toEqual([p.id]);
    expect((await cartOf(freshIp(), b.sid)).items.map((i) => i.productId)).toEqual([q.id]);
  });
});

describe('PATCH and DELETE /cart/items/:productId', () => {
  test('PATCH sets the quantity; 0 removes the line', async () => {
    const ip = freshIp();
    const p = await makeProduct({ stock: 10 });
    const q = await makeProduct({ stock: 10 });
    const { sid } = await add(ip, undefined, p.id, 1);
    await add(ip, sid, q.id, 1);
    const set = await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, sid, body: { quantity: 7 } });
    expect(set.status, set.text).toBe(200);
    expect(set.body).toEqual({ productId: p.id, quantity: 7 });
    expect((await cartOf(ip, sid)).items.map((i) => [i.productId, i.quantity])).toEqual([[p.id, 7], [q.id, 1]]);
    const zero = await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, sid, body: { quantity: 0 } });
    expect(zero.body).toEqual({ productId: p.id, quantity: 0 });
    expect((await cartOf(ip, sid)).items.map((i) => i.productId)).toEqual([q.id]);
  });

  test('DELETE removes the line (204), and again is still 204', async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const { sid } = await add(ip, undefined, p.id, 4);
    const r = await call(`/cart/items/${p.id}`, { method: 'DELETE', ip, sid });
    expect(r.status, r.text).toBe(204);
    expect(await cartOf(ip, sid)).toEqual({ items: [], total: 0 });
    expect((await call(`/cart/items/${p.id}`, { method: 'DELETE', ip, sid })).status).toBe(204);
  });

  test('DELETE without a session is 204 and creates none', async () => {
    const r = await call('/cart/items/1', { method: 'DELETE', ip: freshIp() });
    expect(r.status, r.text).toBe(204);
    expect(r.cookieLine).toBeUndefined();
  });
});
