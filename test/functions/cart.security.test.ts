/**
 * /cart security: cross-site writes with the cookie are refused (CSRF), a forged cookie never
 * becomes a session id, one visitor cannot reach another's cart, and the client cannot set prices.
 */
import { describe, expect, test } from 'vitest';
import { call, expectProblem, freshIp, loggedIn, makeProduct, type CartBody } from './auth.support.ts';

const EVIL = { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' };

async function cartOf(ip: string, sid: string | undefined): Promise<CartBody> {
  const r = await call('/cart', { ip, sid });
  expect(r.status, r.text).toBe(200);
  return r.body as CartBody;
}

describe('CSRF', () => {
  test('POST /cart/items with the cookie and Origin: https://evil.example → 403, the cart unchanged', async () => {
    const ip = freshIp();
    const p = await makeProduct({ stock: 50 });
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 1 } });
    const r = await call('/cart/items', { method: 'POST', ip, sid, body: { productId: p.id, quantity: 5 }, headers: { origin: 'https://evil.example' } });
    expectProblem(r, 403, 'forbidden');
    expect((await cartOf(ip, sid)).items.map((i) => i.quantity)).toEqual([1]);
  });

  test('PATCH and DELETE from another site are refused too', async () => {
    const ip = freshIp();
    const p = await makeProduct({ stock: 50 });
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 2 } });
    expectProblem(await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, sid, body: { quantity: 9 }, headers: EVIL }), 403, 'forbidden');
    expectProblem(await call(`/cart/items/${p.id}`, { method: 'DELETE', ip, sid, headers: EVIL }), 403, 'forbidden');
    // A cross-site request may not even rely on Sec-Fetch-Site alone, without an Origin.
    expectProblem(await call(`/cart/items/${p.id}`, { method: 'DELETE', ip, sid, headers: { 'sec-fetch-site': 'cross-site' } }), 403, 'forbidden');
    expect((await cartOf(ip, sid)).items.map((i) => i.quantity)).toEqual([2]);
  });

  test('the same origin passes', async () => {
    const ip = freshIp();
    const p = await makeProduct({ stock: 50 });
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 2 } });
    const r = await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, sid, body: { quantity: 3 }, headers: { origin: 'http://shop.test', 'sec-fetch-site': 'same-origin' } });
    expect(r.status, r.text).toBe(200);
  });
});

describe('sessions and carts', () => {
  test('a forged cookie is never adopted: the first add issues a new random id', async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const forged = 'F'.repeat(43);
    expect(await cartOf(ip, forged)).toEqual({ items: [], total: 0 });
    const r = await call('/cart/items', { method: 'POST', ip, sid: forged, body: { productId: p.id, quantity: 1 } });
    expect(r.status, r.text).toBe(200);
    expect(r.sid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(r.sid).not.toBe(forged);
    expect(await cartOf(ip, forged)).toEqual({ items: [], total: 0 });
  });

  test("a malformed cookie is treated as none, and a user's cart is not reachable from another user's session", async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const alice = await loggedIn(ip);
    const bob = await loggedIn(ip);
    expect((await call('/cart/items', { method: 'POST', ip, sid: alice.sid, body: { productId: p.id, quantity: 3 } })).status).toBe(200);
    expect(await cartOf(ip, bob.sid)).toEqual({ items: [], total: 0 });
    expect(await cartOf(ip, `${alice.sid}x`)).toEqual({ items: [], total: 0 });
    expect((await cartOf(ip, alice.sid)).items.map((i) => i.quantity)).toEqual([3]);
  });

  test('prices come from the catalogue, never from the client', async () => {
    const ip = freshIp();
    const p = await makeProduct({ priceCents: 5000 });
    const r = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 1, price: 0 } });
    expectProblem(r, 400, 'bad_request');
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 1 } });
    expect((await cartOf(ip, sid)).total).toBe(50);
  });

  test('the cart answer is not cacheable by shared caches', async () => {
    const r = await call('/cart', { ip: freshIp() });
    expect(r.res.headers.get('cache-control')).toBe('no-store');
  });
});
