/**
 * /cart errors: bad bodies and params (400 naming the fields), unknown products (404), short stock
 * and a full cart (409, cart unchanged), and Redis being down (sessions fail closed).
 */
import { describe, expect, inject, test } from 'vitest';
import { MAX_LINES } from '../../src/functions/cart.ts';
import { badFields, call, env, envWithBrokenD1, shopEnv, expectProblem, freshIp, makeProduct, type CartBody } from './auth.support.ts';

async function cartOf(ip: string, sid: string | undefined): Promise<CartBody> {
  const r = await call('/cart', { ip, sid });
  expect(r.status, r.text).toBe(200);
  return r.body as CartBody;
}

describe('POST /cart/items: bad input', () => {
  test.each([
    ['productId 0', { productId: 0, quantity: 1 }, ['json:productId']],
    ['productId negative', { productId: -3, quantity: 1 }, ['json:productId']],
    ['productId fractional', { productId: 1.5, quantity: 1 }, ['json:productId']],
    ['productId as a string', { productId: '1', quantity: 1 }, ['json:productId']],
    ['quantity 0', { productId: 1, quantity: 0 }, ['json:quantity']],
    ['quantity 100', { productId: 1, quantity: 100 }, ['json:quantity']],
    ['both missing', {}, ['json:productId', 'json:quantity']],
    ['a price from the client', { productId: 1, quantity: 1, price: 0.01 }, ['json:(root)']],
  ])('%s → 400 naming the fields, and no session is started', async (_, body, fields) => {
    const r = await call('/cart/items', { method: 'POST', ip: freshIp(), body });
    expectProblem(r, 400, 'bad_request');
    expect(badFields(r), r.text).toEqual(fields);
    expect(r.cookieLine).toBeUndefined();
  });

  test('a product that does not exist → 404 and no session', async () => {
    const r = await call('/cart/items', { method: 'POST', ip: freshIp(), body: { productId: 2_000_000_000, quantity: 1 } });
    expectProblem(r, 404, 'not_found');
    expect(r.cookieLine).toBeUndefined();
  });
});

describe('stock and size', () => {
  test('more than the stock → 409 with what is available; the cart is unchanged', async () => {
    const ip = freshIp();
    const p = await makeProduct({ stock: 5 });
    const over = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 6 } });
    expect(expectProblem(over, 409, 'conflict')).toMatchObject({ productId: p.id, available: 5 });
    expect(over.cookieLine).toBeUndefined();

    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 4 } });
    // Adding 2 to the 4 already there would make 6.
    expectProblem(await call('/cart/items', { method: 'POST', ip, sid, body: { productId: p.id, quantity: 2 } }), 409, 'conflict');
    expectProblem(await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, sid, body: { quantity: 6 } }), 409, 'conflict');
    expect((await cartOf(ip, sid)).items.map((i) => i.quantity)).toEqual([4]);
  });

  test(`a cart holds at most ${MAX_LINES} products; one more → 409, more of one already there is fine`, async () => {
    const ip = freshIp();
    const now = Date.now();
    // MAX_LINES + 1 products in one statement.
    const rows = await env.DB.prepare(
      `INSERT INTO products (name, category, price_cents, stock, created_at, updated_at) SELECT 'bulk ' || value, 'toys', 100, 10, ?1, ?1 FROM json_each(?2) RETURNING id`,
    )
      .bind(now, JSON.stringify(Array.from({ length: MAX_LINES + 1 }, (_, i) => i)))
      .all<{ id: number }>();
    const ids = rows.results.map((r) => r.id);
    expect(ids).toHaveLength(MAX_LINES + 1);
    let sid: string | undefined;
    for (const id of ids.slice(0, MAX_LINES)) {
      const r = await call('/cart/items', { method: 'POST', ip, sid, body: { productId: id, quantity: 1 } });
      expect(r.status, r.text).toBe(200);
      sid ??= r.sid;
    }
    expectProblem(await call('/cart/items', { method: 'POST', ip, sid, body: { productId: ids[MAX_LINES], quantity: 1 } }), 409, 'conflict');
    expect((await call('/cart/items', { method: 'POST', ip, sid, body: { productId: ids[0], quantity: 1 } })).status).toBe(200);
    const cart = await cartOf(ip, sid);
    expect(cart.items).toHaveLength(MAX_LINES);
    expect(cart.total).toBe(MAX_LINES + 1);
  });
});

describe('PATCH and DELETE /cart/items/:productId: errors', () => {
  test.each(['abc', '0', '01', '1.5', '-1', '99999999999999999'])('productId %s in the path → 400 naming it', async (id) => {
    const r = await call(`/cart/items/${id}`, { method: 'PATCH', ip: freshIp(), body: { quantity: 1 } });
    expectProblem(r, 400, 'bad_request');
    expect(badFields(r)).toContain('param:productId');
    const d = await call(`/cart/items/${id}`, { method: 'DELETE', ip: freshIp() });
    expectProblem(d, 400, 'bad_request');
  });

  test.each([
    ['quantity 100', { quantity: 100 }, ['json:quantity']],
    ['quantity -1', { quantity: -1 }, ['json:quantity']],
    ['no quantity', {}, ['json:quantity']],
    ['an unknown field', { quantity: 1, productId: 2 }, ['json:(root)']],
  ])('PATCH with %s → 400 naming it', async (_, body, fields) => {
    const r = await call('/cart/items/1', { method: 'PATCH', ip: freshIp(), body });
    expectProblem(r, 400, 'bad_request');
    expect(badFields(r), r.text).toEqual(fields);
  });

  test('PATCH of a product not in the cart → 404, with or without a session', async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const q = await makeProduct();
    expectProblem(await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, body: { quantity: 1 } }), 404, 'not_found');
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: q.id, quantity: 1 } });
    expectProblem(await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, sid, body: { quantity: 1 } }), 404, 'not_found');
  });

  test('PATCH of a line whose product was deleted → 404; setting it to 0 still removes it', async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 1 } });
    await env.DB.prepare('DELETE FROM products WHERE id = ?').bind(p.id).run();
    expectProblem(await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, sid, body: { quantity: 2 } }), 404, 'not_found');
    expect((await call(`/cart/items/${p.id}`, { method: 'PATCH', ip, sid, body: { quantity: 0 } })).status).toBe(200);
  });
});

describe('Redis down', () => {
  const down = () => ({ ...shopEnv, UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') });

  test('a cart behind a cookie cannot be read: 503 problem+json (sessions fail closed)', async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 1 } });
    const r = await call('/cart', { ip, sid, env: down() });
    expectProblem(r, 503, 'unavailable');
    expect(r.res.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(r.text).not.toContain(inject('gatewayToken'));
  });

  test('adding to a cart → 503, and the cart is unchanged once Redis is back', async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 1 } });
    expectProblem(await call('/cart/items', { method: 'POST', ip, sid, body: { productId: p.id, quantity: 1 }, env: down() }), 503, 'unavailable');
    expect((await cartOf(ip, sid)).items.map((i) => i.quantity)).toEqual([1]);
  });

  test('an anonymous visitor without a cookie still sees an empty cart (no session needed)', async () => {
    const r = await call('/cart', { ip: freshIp(), env: down() });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({ items: [], total: 0 });
  });
});

describe('D1 down', () => {
  test('adding → 503 with Retry-After and the cart unchanged; a cart priced from D1 → 503', async () => {
    const ip = freshIp();
    const p = await makeProduct();
    const { sid } = await call('/cart/items', { method: 'POST', ip, body: { productId: p.id, quantity: 1 } });
    const r = await call('/cart/items', { method: 'POST', ip, sid, body: { productId: p.id, quantity: 1 }, env: envWithBrokenD1() });
    expectProblem(r, 503, 'unavailable');
    expect(r.res.headers.get('retry-after')).toBe('5');
    expect(r.text).not.toContain('D1_ERROR');
    // The product is not in the cache, so pricing needs D1.
    expectProblem(await call('/cart', { ip, sid, env: envWithBrokenD1() }), 503, 'unavailable');
    expect((await cartOf(ip, sid)).items.map((i) => i.quantity)).toEqual([1]);
  });
});
