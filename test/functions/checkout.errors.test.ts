/**
 * POST /checkout, errors: bad or missing keys, bodies, empty and invalid carts, unknown products,
 * short stock (nothing applied), a key in progress or reused for another cart, stale lock fences
 * refused by D1, and Redis failing before (503) and after (201 anyway) the order is committed.
 */
import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test';
import { inject, afterEach, describe, expect, it, vi } from 'vitest';
import { decrementStatement, orderStatements } from '../../src/functions/orders.ts';
import worker from '../../src/index.ts';
import { fingerprint } from 'edge-redis/idempotency';
import { services } from '../../src/services.ts';
import { failingRequests } from '../support/faults.ts';
import {
  call, checkout, createProduct, eventually, expectProblem, freshIp, keysOf, ordersOf, ownEnv, redis, sessionState, sleep, stockOf, withCart,
} from './checkout.support.ts';

const shop = ownEnv();
const key = () => crypto.randomUUID();

afterEach(() => {
  vi.restoreAllMocks();
});

describe('the Idempotency-Key header', () => {
  it('is required: 400 problem+json naming it, before anything is ordered', async () => {
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const body = expectProblem(await checkout(shop, sid, undefined, freshIp()), 400, 'bad_request');
    expect(body['errors']).toEqual([{ in: 'header', field: 'idempotency-key', message: expect.stringMatching(/required/i) }]);
    expect(await stockOf(shop, p)).toBe(10);
  });

  it.each([
    ['empty', ''],
    ['with a space', 'abc def'],
    ['101 characters', 'k'.repeat(101)],
    ['with a tab', 'abc\tdef'],
  ])('must be 1..100 visible ASCII characters: %s → 400', async (_, value) => {
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const body = expectProblem(await checkout(shop, sid, value, freshIp()), 400, 'bad_request');
    expect(body['errors']).toEqual([{ in: 'header', field: 'idempotency-key', message: expect.any(String) }]);
    expect(await ordersOf(shop, p)).toEqual([]);
  });

  it('100 visible ASCII characters (any of them) are a valid key', async () => {
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const r = await checkout(shop, sid, `"{key}:*?/\\~${'x'.repeat(87)}`, freshIp());
    expect(r.status, r.text).toBe(201);
  });
});

describe('the body and the cart', () => {
  it('a body with fields is 400 naming them (the order is the cart); malformed JSON is 400', async () => {
    const ip = freshIp();
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const fields = expectProblem(await checkout(shop, sid, key(), ip, { body: JSON.stringify({ items: [{ productId: p, quantity: 100 }], total: 0 }), headers: { 'content-type': 'application/json' } }), 400, 'bad_request');
    expect(fields['errors']).toEqual([
      { in: 'json', field: 'items', message: expect.any(String) },
      { in: 'json', field: 'total', message: expect.any(String) },
    ]);
    expectProblem(await checkout(shop, sid, key(), ip, { body: '{"a":', headers: { 'content-type': 'application/json' } }), 400, 'bad_request');
    expectProblem(await checkout(shop, sid, key(), ip, { body: '[]', headers: { 'content-type': 'application/json' } }), 400, 'bad_request');
    expect(await stockOf(shop, p)).toBe(10);
    // An empty body or {} is fine.
    expect((await checkout(shop, sid, key(), ip, { body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(201);
  });

  it('an empty cart is 422 (no session at all, or a session whose cart is empty)', async () => {
    const ip = freshIp();
    const none = expectProblem(await checkout(shop, undefined, key(), ip), 422, 'unprocessable');
    expect(none['detail']).toMatch(/cart is empty/);
    const sid = await withCart(shop, {});
    expectProblem(await checkout(shop, sid, key(), ip), 422, 'unprocessable');
  });

  it('a cart line that is not valid is 422, nothing ordered', async () => {
    const p = await createProduct(shop);
    for (const cart of [{ [p]: 0 }, { [p]: 1.5 }, { abc: 1 }, { [p]: 100 }]) {
      const sid = await withCart(shop, cart);
      expectProblem(await checkout(shop, sid, key(), freshIp()), 422, 'unprocessable');
    }
    expect(await ordersOf(shop, p)).toEqual([]);
  });

  it('a product that no longer exists is 422 naming it; nothing of the order applies; the key stays usable', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 5 });
    const gone = 2_000_000_000;
    const sid = await withCart(shop, { [p]: 1, [gone]: 1 });
    const k = key();
    const body = expectProblem(await checkout(shop, sid, k, ip), 422, 'unprocessable');
    expect(body).toMatchObject({ products: [gone], detail: expect.stringContaining(String(gone)) });
    expect(await stockOf(shop, p)).toBe(5);
    expect(await ordersOf(shop, p)).toEqual([]);
    expect((await sessionState(shop, sid)).cart).toEqual({ [p]: 1, [gone]: 1 });

    await withCart(shop, { [p]: 1 }, { sid });
    const retry = await checkout(shop, sid, k, ip);
    expect(retry.status, retry.text).toBe(201);
    expect(await stockOf(shop, p)).toBe(4);
  });
});

describe('short stock', () => {
  it('409 naming each short product with what is left; the batch applies nothing (other lines, order)', async () => {
    const ip = freshIp();
    const a = await createProduct(shop, { stock: 5 });
    const b = await createProduct(shop, { stock: 1 });
    const c = await createProduct(shop, { stock: 0 });
    const sid = await withCart(shop, { [a]: 2, [b]: 2, [c]: 1 });
    const k = key();
    const body = expectProblem(await checkout(shop, sid, k, ip), 409, 'conflict');
    expect(body['products']).toEqual([{ productId: b, requested: 2, available: 1 }, { productId: c, requested: 1, available: 0 }]);
    expect(body['detail']).toMatch(new RegExp(`${b} \\(1 left\\).*${c} \\(0 left\\)`));
    expect([await stockOf(shop, a), await stockOf(shop, b), await stockOf(shop, c)]).toEqual([5, 1, 0]);
    expect(await ordersOf(shop, a)).toEqual([]);
    expect((await sessionState(shop, sid)).cart).not.toBeNull();
    expect(await redis.zscore(keysOf(shop).key('leaderboard', 'best-sellers'), String(a))).toBeNull();
    // Nothing was ordered under the key, so it is free: the same key succeeds once the cart fits.
    await withCart(shop, { [a]: 2 }, { sid });
    expect((await checkout(shop, sid, k, ip)).status).toBe(201);
  });
});

describe('a key in progress or reused', () => {
  async function recordKey(sid: string, k: string): Promise<string> {
    const { handle } = await sessionState(shop, sid);
    return keysOf(shop).key('idem', 'checkout', await fingerprint(['checkout', `session:${handle}`, k]));
  }

  it('a duplicate while the first still runs: 409 + Retry-After (same cart) or 422 (another cart)', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 10 });
    const sid = await withCart(shop, { [p]: 1 });
    const k = key();
    // Hold the product's lock so the first request waits inside, its key claimed.
    const blocker = await services(shop).locks.acquire(`product:${p}`, { leaseMs: 10_000 });
    if (!blocker) throw new Error('setup');
    const first = checkout(shop, sid, k, ip);
    const record = await recordKey(sid, k);
    await eventually(async () => (await redis.exists(record)) === 1, 'the first request claims the key');

    const dup = expectProblem(await checkout(shop, sid, k, ip), 409, 'conflict');
    expect(dup['detail']).toMatch(/in progress/);
    await withCart(shop, { [p]: 2 }, { sid });
    const other = expectProblem(await checkout(shop, sid, k, ip), 422, 'unprocessable');
    expect(other['detail']).toMatch(/different cart/);

    await blocker.release();
    const done = await first;
    expect(done.status, done.text).toBe(201);
    expect(await ordersOf(shop, p)).toHaveLength(1);
  });

  it('the same key after a finished order, with a different cart: 422, nothing ordered', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 10 });
    const sid = await withCart(shop, { [p]: 1 });
    const k = key();
    expect((await checkout(shop, sid, k, ip)).status).toBe(201);
    await withCart(shop, { [p]: 4 }, { sid });
    expectProblem(await checkout(shop, sid, k, ip), 422, 'unprocessable');
    expect(await stockOf(shop, p)).toBe(9);
    expect((await sessionState(shop, sid)).cart).toEqual({ [p]: 4 });
  });

  it('busy products past the lock wait: 409 + Retry-After, and the key is free again', async () => {
    const ip = freshIp();
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const k = key();
    const blocker = await services(shop).locks.acquire(`product:${p}`, { leaseMs: 30_000 });
    if (!blocker) throw new Error('setup');
    const r = await checkout(shop, sid, k, ip); // waits LOCK_WAIT_MS (5 s)
    const body = expectProblem(r, 409, 'conflict');
    expect(body['detail']).toMatch(/Another checkout/);
    expect(r.res.headers.get('retry-after')).toBe('1');
    expect(await redis.exists(await recordKey(sid, k))).toBe(0);
    await blocker.release();
    expect((await checkout(shop, sid, k, ip)).status).toBe(201);
  }, 15_000);
});

describe('lock fences in D1', () => {
  it('a stale fence write is refused: the lease expired, a newer holder wrote, the old holder changes nothing', async () => {
    const { locks } = services(shop);
    const p = await createProduct(shop, { stock: 10 });
    const old = await locks.acquire(`product:${p}`, { leaseMs: 50 });
    if (!old) throw new Error('setup');
    await sleep(120); // the old holder is paused past its lease
    const current = await locks.acquire(`product:${p}`, { leaseMs: 10_000 });
    if (!current) throw new Error('the expired lease should have freed the lock');
    expect(current.fence).toBeGreaterThan(old.fence);

    await decrementStatement(shop.DB, [{ productId: p, quantity: 1, fence: current.fence }], Date.now()).run();
    expect(await shop.DB.prepare('SELECT stock, fence FROM products WHERE id = ?1').bind(p).first()).toEqual({ stock: 9, fence: current.fence });

    await expect(decrementStatement(shop.DB, [{ productId: p, quantity: 1, fence: old.fence }], Date.now()).run()).rejects.toThrow(/NOT NULL constraint failed: products\.stock/);
    // The same fence twice is stale too (only a strictly newer one may write).
    await expect(decrementStatement(shop.DB, [{ productId: p, quantity: 1, fence: current.fence }], Date.now()).run()).rejects.toThrow(/constraint/);
    expect(await shop.DB.prepare('SELECT stock, fence FROM products WHERE id = ?1').bind(p).first()).toEqual({ stock: 9, fence: current.fence });
    await current.release();
  });

  it('a stale fence inside the order batch rolls the whole order back (order, lines, other stock)', async () => {
    const a = await createProduct(shop, { stock: 10 });
    const b = await createProduct(shop, { stock: 10 });
    await shop.DB.prepare('UPDATE products SET fence = 50 WHERE id = ?1').bind(b).run();
    const orderId = crypto.randomUUID();
    const statements = orderStatements(shop.DB, {
      orderId, idempotencyKey: await fingerprint(orderId), userId: null, createdAt: Date.now(),
      lines: [{ productId: a, quantity: 1, fence: 7 }, { productId: b, quantity: 1, fence: 49 }],
    });
    await expect(shop.DB.batch(statements)).rejects.toThrow(/constraint/);
    expect([await stockOf(shop, a), await stockOf(shop, b)]).toEqual([10, 10]);
    expect(await shop.DB.prepare('SELECT count(*) AS n FROM orders WHERE id = ?1').bind(orderId).first('n')).toBe(0);
    expect(await shop.DB.prepare('SELECT count(*) AS n FROM order_items WHERE order_id = ?1').bind(orderId).first('n')).toBe(0);
    // With fresh fences the same batch applies.
    const ok = orderStatements(shop.DB, { orderId, idempotencyKey: await fingerprint(orderId), userId: null, createdAt: Date.now(), lines: [{ productId: a, quantity: 1, fence: 7 }, { productId: b, quantity: 1, fence: 51 }] });
    await shop.DB.batch(ok);
    expect([await stockOf(shop, a), await stockOf(shop, b)]).toEqual([9, 9]);
  });
});

describe('D1 failures', () => {
  it('the order batch committed but its answer was lost: found by its key, answered 201 as placed, effects run once', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 10 });
    const sid = await withCart(shop, { [p]: 2 });
    let lose = true;
    // The real D1, except that the first batch's answer is lost after it committed.
    const flaky: D1Database = Object.assign(Object.create(shop.DB) as D1Database, {
      prepare: (q: string) => shop.DB.prepare(q),
      batch: async <T>(statements: D1PreparedStatement[]) => {
        const results = await shop.DB.batch<T>(statements);
        if (lose) {
          lose = false;
          throw new Error('D1_ERROR: Network connection lost.');
        }
        return results;
      },
    });
    const r = await call({ ...shop, DB: flaky }, '/checkout', { method: 'POST', sid, ip, headers: { 'idempotency-key': key() } });
    expect(r.status, r.text).toBe(201);
    expect(r.res.headers.get('idempotent-replayed')).toBeNull();
    expect(lose).toBe(false);
    expect(await stockOf(shop, p)).toBe(8);
    expect(await ordersOf(shop, p)).toHaveLength(1);
    expect(r.body).toMatchObject({ orderId: (await ordersOf(shop, p))[0]?.id, items: [{ productId: p, quantity: 2 }] });
    expect(await redis.zscore(keysOf(shop).key('leaderboard', 'best-sellers'), String(p))).toBe(2);
  });

  it('D1 unreachable: 503 problem+json, the key and the locks are given back', async () => {
    const ip = freshIp();
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const broken: D1Database = Object.assign(Object.create(shop.DB) as D1Database, {
      prepare: (q: string) => shop.DB.prepare(q),
      batch: async () => {
        throw new Error('D1_ERROR: Network connection lost.');
      },
    });
    const k = key();
    const down = { ...shop, DB: broken };
    const errors = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    expectProblem(await call(down, '/checkout', { method: 'POST', sid, ip, headers: { 'idempotency-key': k } }), 503, 'unavailable');
    expect(errors.mock.calls.map((c) => String(c[0])).join('\n')).toMatch(/D1_ERROR/);
    expect((await services(down).locks.inspect(`product:${p}`)).held).toBe(false);
    // The same key works once D1 is back.
    expect((await checkout(shop, sid, k, ip)).status).toBe(201);
  });
});

describe('Redis failures', () => {
  it('Redis down before the order: 503 problem+json, nothing ordered', async () => {
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const down = { ...shop, UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') };
    const r = await call(down, '/checkout', { method: 'POST', sid, ip: freshIp(), headers: { 'idempotency-key': key() } });
    expectProblem(r, 503, 'unavailable');
    expect(r.text).not.toContain('127.0.0.1');
    expect(await ordersOf(shop, p)).toEqual([]);
  });

  it('the after-commit round trip fails: the order stands, 201 anyway, logged; the key is replayed from D1 later', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 10 });
    const sid = await withCart(shop, { [p]: 1 });
    const k = key();
    const errors = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    // A network fault on exactly the request that carries the ZINCRBY (the after-commit writes).
    const r = await failingRequests((body) => body.includes('"zincrby"'), async () => {
      const ctx = createExecutionContext();
      const res = await worker.fetch(new Request('http://shop.test/checkout', { method: 'POST', headers: { cookie: `sid=${sid}`, 'idempotency-key': k, 'cf-connecting-ip': ip } }), shop, ctx);
      await waitOnExecutionContext(ctx);
      return res;
    });
    const text = await r.text();
    expect(r.status, text).toBe(201);
    expect(await stockOf(shop, p)).toBe(9);
    expect(await ordersOf(shop, p)).toHaveLength(1);
    const logged = errors.mock.calls.map((c) => String(c[0])).join('\n');
    expect(logged).toMatch(/placed, but after-commit steps failed/);
    expect(logged).toMatch(/leaderboard/);
    expect(logged).not.toMatch(/command was/);
    expect(await redis.zscore(keysOf(shop).key('leaderboard', 'best-sellers'), String(p))).toBeNull();

    // The stored response and the cart's emptying were lost with that trip (the claim is left to
    // expire): a retry finds the order in D1 by its key and answers it again.
    const again = await checkout(shop, sid, k, ip);
    expect(again.status, again.text).toBe(201);
    expect(again.text).toBe(text);
    expect(await ordersOf(shop, p)).toHaveLength(1);
  });
});
