/**
 * POST /checkout, security: CSRF (a cookie-carrying request from another origin), idempotency keys
 * scoped to their visitor (another session's key neither replays nor blocks), prices taken from D1
 * only, and no stack traces or internals in any error.
 */
import { describe, expect, it } from 'vitest';
import { checkout, createProduct, expectProblem, freshIp, ordersOf, ownEnv, sessionState, stockOf, withCart } from './checkout.support.ts';

const shop = ownEnv();
const key = () => crypto.randomUUID();

describe('CSRF', () => {
  it.each([
    ['a foreign Origin', { origin: 'https://evil.test' }],
    ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ['Sec-Fetch-Site: same-site (a sibling subdomain)', { 'sec-fetch-site': 'same-site', origin: 'https://sub.shop.test' }],
  ])('a checkout carrying the session cookie from %s is 403; nothing ordered, cart kept', async (_, headers) => {
    const p = await createProduct(shop, { stock: 5 });
    const sid = await withCart(shop, { [p]: 1 });
    expectProblem(await checkout(shop, sid, key(), freshIp(), { headers }), 403, 'forbidden');
    expect(await stockOf(shop, p)).toBe(5);
    expect(await ordersOf(shop, p)).toEqual([]);
    expect((await sessionState(shop, sid)).cart).toEqual({ [p]: 1 });
  });

  it('the same request from this origin goes through', async () => {
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const r = await checkout(shop, sid, key(), freshIp(), { headers: { origin: 'http://shop.test', 'sec-fetch-site': 'same-origin' } });
    expect(r.status, r.text).toBe(201);
  });
});

describe('idempotency keys are scoped to their visitor', () => {
  it('another session using the same key gets its own order, never the first one', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 10 });
    const k = key();
    const alice = await checkout(shop, await withCart(shop, { [p]: 1 }), k, ip);
    const bob = await checkout(shop, await withCart(shop, { [p]: 2 }), k, ip);
    expect(alice.status, alice.text).toBe(201);
    expect(bob.status, bob.text).toBe(201);
    expect(bob.res.headers.get('idempotent-replayed')).toBeNull();
    expect((bob.body as { orderId: string }).orderId).not.toBe((alice.body as { orderId: string }).orderId);
    expect(await ordersOf(shop, p)).toHaveLength(2);
    expect(await stockOf(shop, p)).toBe(7);
  });

  it('a session with an empty cart cannot read another session\'s order by its key', async () => {
    const ip = freshIp();
    const p = await createProduct(shop);
    const k = key();
    expect((await checkout(shop, await withCart(shop, { [p]: 1 }), k, ip)).status).toBe(201);
    const snoop = await checkout(shop, await withCart(shop, {}), k, ip);
    const body = expectProblem(snoop, 422, 'unprocessable');
    expect(snoop.text).not.toMatch(/orderId/);
    expect(body['detail']).toMatch(/cart is empty/);
  });
});

describe('what the client cannot choose', () => {
  it('prices come from D1, whatever the body says (a body with fields is refused outright)', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { priceCents: 9_999 });
    const sid = await withCart(shop, { [p]: 1 });
    expectProblem(await checkout(shop, sid, key(), ip, { body: JSON.stringify({ price: 0.01 }), headers: { 'content-type': 'application/json' } }), 400, 'bad_request');
    const r = await checkout(shop, sid, key(), ip);
    expect(r.body).toMatchObject({ items: [{ productId: p, price: 99.99 }], total: 99.99 });
  });

  it('no error leaks a stack trace, SQL, a Redis key or a command', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 0 });
    const answers = [
      await checkout(shop, undefined, undefined, ip),
      await checkout(shop, undefined, key(), ip),
      await checkout(shop, await withCart(shop, { [p]: 1 }), key(), ip),
      await checkout(shop, await withCart(shop, { 1999999999: 1 }), key(), ip),
    ];
    expect(answers.map((a) => a.status)).toEqual([400, 422, 409, 422]);
    for (const a of answers) {
      expect(a.res.headers.get('content-type')).toBe('application/problem+json');
      expect(a.text).not.toMatch(/\bat \S+:\d+|stack|SELECT|INSERT|UPDATE|constraint|D1_|shop:|c[0-9a-f]{8}:|evalsha|command was/i);
    }
  });
});
