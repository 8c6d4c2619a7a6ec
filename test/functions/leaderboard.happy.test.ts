/** GET /leaderboard/best-sellers: the top products by units sold, in one round trip. */
import { describe, expect, it } from 'vitest';
import { bestSellers, MAX_AGE_S } from '../../src/functions/leaderboard.ts';
import { countTrips } from '../support/round-trips.ts';
import { call, checkout, createProduct, freshIp, gatewayUrl, ownEnv, withCart } from './checkout.support.ts';

const shop = ownEnv();

describe('GET /leaderboard/best-sellers', () => {
  it('lists products by units sold, highest first, counting every checkout', async () => {
    const ip = freshIp();
    const [a, b, c] = [await createProduct(shop), await createProduct(shop), await createProduct(shop)];
    for (const cart of [{ [a]: 2, [b]: 5 }, { [a]: 4 }, { [c]: 1 }]) {
      const r = await checkout(shop, await withCart(shop, cart), crypto.randomUUID(), ip);
      expect(r.status, r.text).toBe(201);
    }
    const r = await call(shop, '/leaderboard/best-sellers?limit=2', { ip });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({ items: [{ productId: a, sold: 6 }, { productId: b, sold: 5 }] });
    expect(r.res.headers.get('cache-control')).toBe(`public, max-age=${MAX_AGE_S}`);
    expect(r.res.headers.getSetCookie()).toEqual([]);
    expect((await call(shop, '/leaderboard/best-sellers', { ip })).body).toEqual({
      items: [{ productId: a, sold: 6 }, { productId: b, sold: 5 }, { productId: c, sold: 1 }],
    });
  });

  it('defaults to 10 and allows up to 100', async () => {
    const ip = freshIp();
    const own = { ...shop, REDIS_KEY_APP: `l${crypto.randomUUID().slice(0, 8)}` };
    const board = bestSellers(own);
    await Promise.all(Array.from({ length: 120 }, (_, i) => board.increment(String(i + 1), i + 1)));
    const ten = (await call(own, '/leaderboard/best-sellers', { ip })).body as { items: { productId: number; sold: number }[] };
    expect(ten.items.map((i) => i.productId)).toEqual([120, 119, 118, 117, 116, 115, 114, 113, 112, 111]);
    const hundred = (await call(own, '/leaderboard/best-sellers?limit=100', { ip })).body as { items: unknown[] };
    expect(hundred.items).toHaveLength(100);
  });

  it('is ONE round trip: the ZRANGE travels with the per-IP check', async () => {
    const ip = freshIp();
    await call(shop, '/leaderboard/best-sellers', { ip }); // warm: the limiter's script is loaded
    const { result, count, criticalPath, commands } = await countTrips(gatewayUrl, () => call(shop, '/leaderboard/best-sellers?limit=3', { ip }));
    expect(result.status, result.text).toBe(200);
    expect(count).toBe(1);
    expect(criticalPath).toBe(1);
    expect([...commands].sort()).toEqual(['evalsha', 'zrange']);
  });
});
