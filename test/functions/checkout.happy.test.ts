/**
 * POST /checkout, happy paths: the order, its effects in D1 and Redis, the round trips, replays of a
 * key (from Redis, and from D1 when Redis lost the record), and concurrent checkouts of the last
 * items in stock (no overselling) and with one key (no double order).
 */
import { describe, expect, it } from 'vitest';
import { productKey } from '../../src/functions/products.ts';
import { services } from '../../src/services.ts';
import { countTrips } from '../support/round-trips.ts';
import {
  checkout, createProduct, eventually, freshIp, gatewayUrl, keysOf, ordersOf, ownEnv, redis, sessionState, stockOf, withCart,
} from './checkout.support.ts';

const shop = ownEnv();
const key = () => crypto.randomUUID();

interface Order {
  orderId: string;
  items: { productId: number; quantity: number; price: number; lineTotal: number }[];
  total: number;
}

describe('POST /checkout', () => {
  it('places the order: 201 with priced lines, stock decremented, order in D1, leaderboard, cache, event, cart emptied', async () => {
    const ip = freshIp();
    const a = await createProduct(shop, { priceCents: 1_234, stock: 5 });
    const b = await createProduct(shop, { priceCents: 500, stock: 3 });
    const sid = await withCart(shop, { [b]: 1, [a]: 2 });
    const { cache, keys } = services(shop);
    await cache.set(productKey(a), { id: a, stock: 5 });
    expect(await redis.exists(keys.slotted('cache', productKey(a)))).toBe(1);

    const messages: unknown[] = [];
    const sub = redis.subscribe<unknown>(keys.key('events', 'inventory'));
    await new Promise<void>((resolve) => sub.on('subscribe', () => resolve()));
    sub.on('message', ({ message }) => messages.push(message));
    try {
      const r = await checkout(shop, sid, key(), ip);
      expect(r.status, r.text).toBe(201);
      expect(r.res.headers.get('idempotent-replayed')).toBeNull();
      const order = r.body as Order;
      expect(order).toEqual({
        orderId: expect.stringMatching(/^[0-9a-f-]{36}$/),
        items: [
          { productId: a, quantity: 2, price: 12.34, lineTotal: 24.68 },
          { productId: b, quantity: 1, price: 5, lineTotal: 5 },
        ],
        total: 29.68,
      });

      expect(await stockOf(shop, a)).toBe(3);
      expect(await stockOf(shop, b)).toBe(2);
      expect(await ordersOf(shop, a)).toEqual([{ id: order.orderId, quantity: 2, total_cents: 2_968, user_id: null }]);
      expect(await ordersOf(shop, b)).toEqual([{ id: order.orderId, quantity: 1, total_cents: 2_968, user_id: null }]);
      const board = keys.key('leaderboard', 'best-sellers');
      expect(await redis.zscore(board, String(a))).toBe(2);
      expect(await redis.zscore(board, String(b))).toBe(1);
      expect(await redis.exists(keys.slotted('cache', productKey(a)))).toBe(0);
      await eventually(async () => messages.length > 0, 'the inventory event');
      expect(messages).toEqual([{ type: 'inventory.changed', items: [{ productId: a, stock: 3 }, { productId: b, stock: 2 }], at: expect.any(Number) }]);
      expect((await sessionState(shop, sid)).cart).toBeNull();
    } finally {
      await sub.unsubscribe();
    }
  });

  it('round trips: 4 on the critical path; the after-commit writes and the session save share ONE', async () => {
    const ip = freshIp();
    // Warm-up: every script the route runs is loaded, so the counted request sends EVALSHA only.
    const warm = await createProduct(shop);
    expect((await checkout(shop, await withCart(shop, { [warm]: 1 }), key(), ip)).status).toBe(201);

    const a = await createProduct(shop);
    const b = await createProduct(shop);
    const sid = await withCart(shop, { [a]: 1, [b]: 2 });
    const { result, trips, criticalPath, count } = await countTrips(gatewayUrl, () => checkout(shop, sid, key(), ip));
    expect(result.status, result.text).toBe(201);
    const summary = JSON.stringify(trips.map((t) => t.commands.join(' ')));
    expect(count, summary).toBe(4);
    expect(criticalPath, summary).toBe(4);
    expect(trips.every((t) => t.beforeResult), summary).toBe(true);
    const [limit, load, claim, after] = trips.map((t) => t.commands);
    expect(limit, summary).toEqual(['evalsha']); // the per-IP check, before any handler for a POST
    expect(load, summary).toEqual(['evalsha_ro']); // the session (the cart)
    expect(claim, summary).toEqual(['set', 'evalsha', 'evalsha']); // SET NX GET PX + both locks' first try
    // Locks released, response stored, 2 ZINCRBY, 2 entries invalidated (UNLINK, SET tombstone,
    // PUBLISH), the list tag's new version (SET, PUBLISH), the inventory event (PUBLISH), and the
    // session's save (the cart emptied): one trip, issued by the handler before it answers.
    expect([...(after ?? [])].sort(), summary).toEqual(
      ['evalsha', 'evalsha', 'set', 'zincrby', 'zincrby', 'unlink', 'set', 'publish', 'unlink', 'set', 'publish', 'set', 'publish', 'publish', 'evalsha'].sort(),
    );
  });

  it('records the user of a logged-in session on the order', async () => {
    const user = await shop.DB.prepare('INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3) RETURNING id')
      .bind(`u_${crypto.randomUUID().slice(0, 12)}`, 'pbkdf2-sha256$1$AA==$AA==', Date.now())
      .first<{ id: number }>();
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 }, { user: String(user?.id) });
    const r = await checkout(shop, sid, key(), freshIp());
    expect(r.status, r.text).toBe(201);
    expect((await ordersOf(shop, p)).map((o) => o.user_id)).toEqual([user?.id]);
  });
});

describe('a repeated Idempotency-Key', () => {
  it('answers the same order again (Idempotent-Replayed: true): no second order, stock taken once', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { priceCents: 250, stock: 10 });
    const sid = await withCart(shop, { [p]: 3 });
    const k = key();
    const first = await checkout(shop, sid, k, ip);
    expect(first.status, first.text).toBe(201);

    // The cart is empty now: the retry of a lost response is answered all the same.
    const again = await countTrips(gatewayUrl, () => checkout(shop, sid, k, ip));
    expect(again.result.status, again.result.text).toBe(201);
    expect(again.result.res.headers.get('idempotent-replayed')).toBe('true');
    expect(again.result.text).toBe(first.text);
    expect(again.trips.flatMap((t) => t.commands)).not.toContain('zincrby');

    // A cart filled again with the same lines (the original's save was lost): replayed, and emptied.
    await withCart(shop, { [p]: 3 }, { sid });
    const third = await checkout(shop, sid, k, ip);
    expect(third.status, third.text).toBe(201);
    expect(third.text).toBe(first.text);
    expect(third.res.headers.get('idempotent-replayed')).toBe('true');
    expect((await sessionState(shop, sid)).cart).toBeNull();

    expect(await stockOf(shop, p)).toBe(7);
    expect(await ordersOf(shop, p)).toHaveLength(1);
    expect(await redis.zscore(keysOf(shop).key('leaderboard', 'best-sellers'), String(p))).toBe(3);
  });

  it('when Redis lost the record, D1 (UNIQUE orders.idempotency_key) still answers the same order', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 10 });
    const sid = await withCart(shop, { [p]: 2 });
    const k = key();
    const first = await checkout(shop, sid, k, ip);
    expect(first.status, first.text).toBe(201);
    const idemKeys = async () => {
      const found: string[] = [];
      let cursor = '0';
      do {
        const [next, page] = await redis.scan(cursor, { match: keysOf(shop).pattern('idem', 'checkout'), count: 1000 });
        found.push(...page);
        cursor = String(next);
      } while (cursor !== '0');
      return found;
    };
    const lost = async () => {
      const ks = await idemKeys();
      expect(ks.length).toBeGreaterThan(0);
      await redis.del(...ks);
    };

    // Same cart again, no Redis record: the batch hits the UNIQUE key and the D1 order is replayed.
    await lost();
    await withCart(shop, { [p]: 2 }, { sid });
    const second = await checkout(shop, sid, k, ip);
    expect(second.status, second.text).toBe(201);
    expect(second.text).toBe(first.text);
    expect(second.res.headers.get('idempotent-replayed')).toBe('true');
    expect((await sessionState(shop, sid)).cart).toBeNull();

    // Empty cart, no Redis record: found in D1 by key.
    await lost();
    const third = await checkout(shop, sid, k, ip);
    expect(third.status, third.text).toBe(201);
    expect(third.text).toBe(first.text);

    expect(await stockOf(shop, p)).toBe(8);
    expect(await ordersOf(shop, p)).toHaveLength(1);
  });
});

describe('concurrent checkouts', () => {
  it('of the last 3 items, 10 sessions × 1: exactly 3 orders, 7 × 409 naming the product, stock 0, never below', async () => {
    const p = await createProduct(shop, { priceCents: 999, stock: 3 });
    const sids = await Promise.all(Array.from({ length: 10 }, () => withCart(shop, { [p]: 1 })));
    const answers = await Promise.all(sids.map((sid) => checkout(shop, sid, key(), freshIp())));
    const won = answers.filter((a) => a.status === 201);
    const lost = answers.filter((a) => a.status !== 201);
    expect(won, answers.map((a) => a.text).join('\n')).toHaveLength(3);
    for (const a of lost) {
      expect(a.status, a.text).toBe(409);
      expect(a.body).toMatchObject({ code: 'conflict', products: [{ productId: p, requested: 1, available: 0 }] });
    }
    expect(await stockOf(shop, p)).toBe(0);
    const orders = await ordersOf(shop, p);
    expect(orders).toHaveLength(3);
    expect(new Set(orders.map((o) => o.id))).toEqual(new Set(won.map((a) => (a.body as Order).orderId)));
    expect(await redis.zscore(keysOf(shop).key('leaderboard', 'best-sellers'), String(p))).toBe(3);
  });

  it('of 3 items, 5 sessions × 2: exactly one order, stock 1', async () => {
    const p = await createProduct(shop, { stock: 3 });
    const sids = await Promise.all(Array.from({ length: 5 }, () => withCart(shop, { [p]: 2 })));
    const answers = await Promise.all(sids.map((sid) => checkout(shop, sid, key(), freshIp())));
    expect(answers.map((a) => a.status).sort(), answers.map((a) => a.text).join('\n')).toEqual([201, 409, 409, 409, 409]);
    expect(await stockOf(shop, p)).toBe(1);
    expect(await ordersOf(shop, p)).toHaveLength(1);
  });

  it('10 at once with the SAME key: one order; every 201 is that order, the rest 409 in progress', async () => {
    const ip = freshIp();
    const p = await createProduct(shop, { stock: 50 });
    const sid = await withCart(shop, { [p]: 2 });
    const k = key();
    const answers = await Promise.all(Array.from({ length: 10 }, () => checkout(shop, sid, k, ip)));
    const won = answers.filter((a) => a.status === 201);
    expect(won.length, answers.map((a) => a.text).join('\n')).toBeGreaterThanOrEqual(1);
    expect(new Set(won.map((a) => (a.body as Order).orderId)).size).toBe(1);
    for (const a of answers.filter((x) => x.status !== 201)) {
      expect(a.status, a.text).toBe(409);
      expect(a.res.headers.get('retry-after')).toBe('1');
    }
    expect(await ordersOf(shop, p)).toHaveLength(1);
    expect(await stockOf(shop, p)).toBe(48);
    // Once it finished, the same key answers that order.
    const later = await checkout(shop, sid, k, ip);
    expect(later.status, later.text).toBe(201);
    expect((later.body as Order).orderId).toBe((won[0]?.body as Order).orderId);
  });
});
