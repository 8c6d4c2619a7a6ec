/**
 * POST /checkout when Redis forgets, on a private Redis of this file (test/support/faults.ts), with
 * D1 as the judge. The README's invariants for orders: never an oversold product (stock = initial −
 * what D1's orders hold, never below 0), never an order placed twice (per key, per cart), never a
 * valid checkout refused (a cart for which stock exists is ordered at the FIRST request after any
 * loss), and a placed order answers 201 whatever Redis does after the commit.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { services } from '../../src/services.ts';
import { envOn, failingRequests, privateRedis, type PrivateRedis } from '../support/faults.ts';
import { countTrips } from '../support/round-trips.ts';
import { call, checkout, createProduct, freshIp, ordersOf, sessionState, stockOf, withCart, type Answer } from './checkout.support.ts';

let lab: PrivateRedis;
let shop: Env;
beforeAll(async () => {
  lab = await privateRedis();
  shop = envOn(lab);
});
afterAll(() => lab?.stop());

const key = () => crypto.randomUUID();
const orderId = (a: Answer) => (a.body as { orderId: string }).orderId;

/** A cart put together through the real cart routes (so it has a cart id); answers its session. */
async function cartVia(env: Env, ip: string, lines: Record<number, number>, into?: string): Promise<string> {
  let sid = into;
  for (const [productId, quantity] of Object.entries(lines)) {
    const r = await call(env, '/cart/items', { method: 'POST', ip, ...(sid ? { sid } : {}), body: JSON.stringify({ productId: Number(productId), quantity }), headers: { 'content-type': 'application/json' } });
    expect(r.status, r.text).toBe(200);
    sid ??= /sid=([^;]+)/.exec(r.res.headers.get('set-cookie') ?? '')?.[1];
  }
  if (!sid) throw new Error('no session');
  return sid;
}

/** Sells `times` × 1 of `p` through the app (each a 201), so D1's fence for it is well above 1. */
async function sell(p: number, times: number): Promise<void> {
  for (let i = 0; i < times; i++) {
    const r = await checkout(shop, await withCart(shop, { [p]: 1 }), key(), freshIp());
    expect(r.status, r.text).toBe(201);
  }
}

/** Units of `p` on the best-sellers board (0 when Redis lost them). */
const boardOf = async (p: number) => Number((await lab.client.zscore(`${shop.REDIS_KEY_APP}:${shop.APP_ENV}:leaderboard:best-sellers`, String(p))) ?? 0);
const fenceOf = async (p: number) => (await shop.DB.prepare('SELECT fence FROM products WHERE id = ?1').bind(p).first<{ fence: number }>())!.fence;

describe('the fence counter forgotten (the README walk-through after a restart)', () => {
  it('Redis flushed between two checkouts: the next one is 201 at its first try, D1 fence above the old', async () => {
    const p = await createProduct(shop, { stock: 20 });
    await sell(p, 4);
    const before = await fenceOf(p);
    expect(before).toBe(4);
    await lab.flushall();
    const errors = vi.spyOn(console, 'error');
    const r = await checkout(shop, await withCart(shop, { [p]: 1 }), key(), freshIp());
    expect(r.status, r.text).toBe(201);
    expect(errors).not.toHaveBeenCalled();
    errors.mockRestore();
    expect(await fenceOf(p)).toBeGreaterThan(before);
    expect(await stockOf(shop, p)).toBe(15);
    expect(await ordersOf(shop, p)).toHaveLength(5);
    // Repaired: the next checkout's order batch goes through at once (one claim+locks trip, no second one).
    const next = await countTrips(lab.bindings.UPSTASH_REDIS_REST_URL, async () => checkout(shop, await withCart(shop, { [p]: 1 }), key(), freshIp()));
    expect(next.result.status).toBe(201);
    expect(next.trips.filter((t) => t.commands.includes('set') && t.commands.filter((c) => c === 'evalsha').length === 1 && t.commands.length === 2)).toHaveLength(1);
  });

  it('Redis restarted empty in the middle of a checkout (after the claim and the locks, before the D1 batch): 201, then the next checkout is 201 at once', async () => {
    const p = await createProduct(shop, { stock: 20 });
    await sell(p, 3);
    let restarted = false;
    const restarting: D1Database = Object.assign(Object.create(shop.DB) as D1Database, {
      prepare: (q: string) => shop.DB.prepare(q),
      batch: async <T>(statements: D1PreparedStatement[]) => {
        if (!restarted) {
          restarted = true;
          await lab.restart();
        }
        return shop.DB.batch<T>(statements);
      },
    });
    const sid = await withCart(shop, { [p]: 2 });
    const r = await call({ ...shop, DB: restarting }, '/checkout', { method: 'POST', sid, ip: freshIp(), headers: { 'idempotency-key': key() } });
    expect(r.status, r.text).toBe(201);
    expect(restarted).toBe(true);
    // The session went with the restart (logged out): nothing to empty, nothing ordered twice.
    expect((await sessionState(shop, sid)).cart).toBeNull();
    // The fence counter went too: the next checkout is repaired inside its own request.
    const next = await checkout(shop, await withCart(shop, { [p]: 1 }), key(), freshIp());
    expect(next.status, next.text).toBe(201);
    expect(await stockOf(shop, p)).toBe(14);
    expect(await ordersOf(shop, p)).toHaveLength(5);
  });
});

describe('Redis failing after the D1 commit', () => {
  it('the after-commit trip (the session save with it) fails: 201, not 503; a retry with a NEW key finds the order by its cart, never a second one', async () => {
    const p = await createProduct(shop, { stock: 10 });
    const ip = freshIp();
    const sid = await cartVia(shop, ip, { [p]: 3 });
    const errors = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const first = await failingRequests((body) => body.includes('"zincrby"'), () => checkout(shop, sid, key(), ip));
    expect(first.status, first.text).toBe(201);
    expect(errors.mock.calls.map((c) => String(c[0])).join('\n')).toMatch(/placed, but after-commit steps failed.*session/);
    errors.mockRestore();
    // The cart could not be emptied and the idempotency record was not stored; the locks were not
    // released either: their leases (10 s) end them, which is what deleting them here stands for.
    expect((await sessionState(shop, sid)).cart).toEqual({ [p]: 3 });
    const leases = (await lab.keys(`${shop.REDIS_KEY_APP}:*:lock:*`)).filter((k) => !k.endsWith(':fence'));
    expect(leases.length).toBeGreaterThan(0);
    await lab.del(...leases);

    const retry = await checkout(shop, sid, key(), ip);
    expect(retry.status, retry.text).toBe(201);
    expect(retry.res.headers.get('idempotent-replayed')).toBe('true');
    expect(orderId(retry)).toBe(orderId(first));
    expect(await ordersOf(shop, p)).toHaveLength(1);
    expect(await stockOf(shop, p)).toBe(7);
    expect((await sessionState(shop, sid)).cart).toBeNull(); // emptied this time

    // A new cart from the same session is a new order.
    await cartVia(shop, ip, { [p]: 1 }, sid);
    expect((await checkout(shop, sid, key(), ip)).status).toBe(201);
    expect(await ordersOf(shop, p)).toHaveLength(2);
  });

  it('a cart ordered, not emptied, then changed: 409 naming the order, emptied, nothing ordered twice', async () => {
    const p = await createProduct(shop, { stock: 10 });
    const q = await createProduct(shop, { stock: 10 });
    const ip = freshIp();
    const sid = await cartVia(shop, ip, { [p]: 1 });
    const first = await checkout(shop, sid, key(), ip);
    expect(first.status).toBe(201);
    // What a failed save leaves: the ordered cart, with its id, still in the session.
    const { keys } = services(shop);
    const [cartId] = await ordersOfCart(orderId(first));
    const stored = keys.key('sess', (await sessionState(shop, sid)).handle!);
    await lab.client.hset(stored, { cart: JSON.stringify({ [p]: 1 }), cartId: JSON.stringify(cartId) });
    await cartVia(shop, ip, { [q]: 1 }, sid); // changed since (the same cart id)
    const r = await checkout(shop, sid, key(), ip);
    expect(r.status, r.text).toBe(409);
    expect(r.body).toMatchObject({ orderId: orderId(first), emptied: true });
    expect((await sessionState(shop, sid)).cart).toBeNull();
    expect(await ordersOf(shop, p)).toHaveLength(1);
    expect(await ordersOf(shop, q)).toHaveLength(0);
  });
});

async function ordersOfCart(id: string): Promise<string[]> {
  const row = await shop.DB.prepare('SELECT cart_id FROM orders WHERE id = ?1').bind(id).first<{ cart_id: string }>();
  return [row!.cart_id];
}

describe('each key of a checkout deleted alone, between an order and its retry', () => {
  it('session, idempotency record, locks, fences, board, cache: the retry with the same key is the same order; a new cart is a new order at its first try; the board never above D1', { timeout: 60_000 }, async () => {
    const kinds = ['sess', 'idem', 'lock', 'leaderboard', 'cache'] as const;
    for (const kind of kinds) {
      const p = await createProduct(shop, { stock: 10 });
      const ip = freshIp();
      const sid = await cartVia(shop, ip, { [p]: 2 });
      const k = key();
      const first = await checkout(shop, sid, k, ip);
      expect(first.status, `${kind}: ${first.text}`).toBe(201);
      const doomed = (await lab.keys(`${shop.REDIS_KEY_APP}:*`)).filter((x) => x.split(':')[2] === kind);
      if (kind !== 'cache' && kind !== 'leaderboard') expect(doomed.length, kind).toBeGreaterThan(0);
      for (const d of doomed) await lab.del(d);
      const retry = await checkout(shop, sid, k, ip);
      // Without its session the visitor is logged out (a new scope, an empty cart): 422, never a second order.
      expect(kind === 'sess' ? [422] : [201], `${kind}: ${retry.text}`).toContain(retry.status);
      if (retry.status === 201) expect(orderId(retry), kind).toBe(orderId(first));
      const fresh = await checkout(shop, await cartVia(shop, freshIp(), { [p]: 1 }), key(), freshIp());
      expect(fresh.status, `${kind}: ${fresh.text}`).toBe(201);
      expect(await ordersOf(shop, p), kind).toHaveLength(2);
      expect(await stockOf(shop, p), kind).toBe(7);
      expect(await boardOf(p), kind).toBeLessThanOrEqual(3); // the best-sellers board never above D1's 3 sold

    }
  });
});

describe('a random share of all keys deleted again and again while checkouts run', () => {
  it('12 shoppers retrying on 409/503 with their key: stock = initial − D1 orders, never below 0; one order per shopper at most; every 201 is in D1', { timeout: 60_000 }, async () => {
    const p = await createProduct(shop, { stock: 8 });
    const shoppers = await Promise.all(Array.from({ length: 12 }, async () => {
      const ip = freshIp();
      return { ip, sid: await cartVia(shop, ip, { [p]: 1 }), key: key() };
    }));
    const stop = await lab.chaos(0.3, 20);
    const outcomes: { status: number; id?: string }[] = [];
    try {
      await Promise.all(shoppers.map(async (s) => {
        for (let i = 0; i < 8; i++) {
          const r = await checkout(shop, s.sid, s.key, s.ip);
          expect([201, 409, 422, 503], r.text).toContain(r.status);
          if (r.status === 201 || r.status === 422) return void outcomes.push({ status: r.status, ...(r.status === 201 ? { id: orderId(r) } : {}) });
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        outcomes.push({ status: 0 });
      }));
    } finally {
      expect((await stop()).rounds).toBeGreaterThan(0);
    }
    const orders = await ordersOf(shop, p);
    const stock = (await stockOf(shop, p))!;
    expect(stock).toBeGreaterThanOrEqual(0);
    expect(stock).toBe(8 - orders.reduce((n, o) => n + o.quantity, 0));
    const placed = outcomes.flatMap((o) => (o.id ? [o.id] : []));
    expect(new Set(placed).size).toBe(placed.length); // no shopper got another's order, none got two
    for (const id of placed) expect(orders.map((o) => o.id)).toContain(id);
    // A shopper whose session the chaos deleted lost the cart (422): allowed loss, never an order.
    expect(orders.length).toBeLessThanOrEqual(8);
    expect(await boardOf(p)).toBeLessThanOrEqual(orders.length);
  });
});
