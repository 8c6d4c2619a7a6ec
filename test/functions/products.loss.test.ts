/**
 * Cached product reads when Redis forgets, on a private Redis of this file (test/support/faults.ts):
 * after an acknowledged `PATCH /products/:id` (200), no `GET /products/:id` or cached list page
 * serves the data from before it, whatever Redis lost: flushed between two steps, each cache key
 * deleted alone, a random half of the keys deleted after the PATCH (the report: a list page
 * served the old price), a random share deleted again and again while reads run, and Redis
 * restarted empty between a read and a PATCH.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { envOn, privateRedis, type PrivateRedis } from '../support/faults.ts';
import { ADMIN, call, createProduct, prefixOf, type ProductBody } from './products.support.ts';

let lab: PrivateRedis;
let e: Env;
beforeAll(async () => {
  lab = await privateRedis();
  e = envOn(lab, { API_RATE_LIMIT: '100000' });
});
afterAll(() => lab?.stop());

const product = async (id: number) => {
  const r = await call(`/products/${id}`, { env: e });
  expect(r.status, r.text).toBe(200);
  return r.body as ProductBody;
};
const listed = async (id: number, category = 'sports') => {
  // The page that holds `id` (products of one category, in id order, 100 a page).
  for (let page = 1; ; page++) {
    const r = await call(`/products?category=${category}&page=${page}&pageSize=100`, { env: e });
    expect(r.status, r.text).toBe(200);
    const body = r.body as { items: ProductBody[]; totalPages: number };
    const found = body.items.find((p) => p.id === id);
    if (found) return found;
    if (page >= body.totalPages) throw new Error(`product ${id} not listed`);
  }
};
const patch = async (id: number, price: number) => {
  const r = await call(`/products/${id}`, { env: e, method: 'PATCH', body: { price }, headers: ADMIN });
  expect(r.status, r.text).toBe(200); // acknowledged
};

describe('after an acknowledged PATCH, never the price from before it', () => {
  it('a random half of the keys deleted after each PATCH, 40 rounds: the product and its list page show the new price', { timeout: 60_000 }, async () => {
    const p = await createProduct(e, { category: 'sports', price: 1 });
    for (let round = 0; round < 40; round++) {
      await product(p.id);
      await listed(p.id); // both cached now
      const price = 100 + round;
      await patch(p.id, price);
      await lab.drop(0.5, `${prefixOf(e)}:*`);
      expect((await product(p.id)).price, `round ${round}`).toBe(price);
      expect((await listed(p.id)).price, `round ${round}`).toBe(price);
    }
  });

  it('each cache key deleted alone after the PATCH (entry, tombstone, tag version): the new price', { timeout: 60_000 }, async () => {
    const p = await createProduct(e, { category: 'sports', price: 1 });
    const cacheKeys = async () => (await lab.keys(`${prefixOf(e)}:cache:*`)).filter((k) => k.includes(`{product:${p.id}}`) || k.includes(':tag:') || k.includes('{products:sports'));
    await product(p.id);
    await listed(p.id);
    const kinds = await cacheKeys();
    expect(kinds.length).toBeGreaterThanOrEqual(3);
    let price = 200;
    for (const k of kinds) {
      await product(p.id);
      await listed(p.id);
      await patch(p.id, ++price);
      await lab.del(k);
      expect((await product(p.id)).price, k).toBe(price);
      expect((await listed(p.id)).price, k).toBe(price);
    }
  });

  it('Redis flushed between a cached read and the PATCH, and restarted empty after it: the new price', async () => {
    const p = await createProduct(e, { category: 'sports', price: 1 });
    await product(p.id);
    await lab.flushall();
    await patch(p.id, 301);
    expect((await product(p.id)).price).toBe(301);
    expect((await listed(p.id)).price).toBe(301);
    await patch(p.id, 302);
    await lab.restart();
    expect((await product(p.id)).price).toBe(302);
    expect((await listed(p.id)).price).toBe(302);
  });

  it('a random share of the keys deleted again and again while reads and PATCHes run: no read started after a PATCH was acknowledged shows an older price', { timeout: 60_000 }, async () => {
    const p = await createProduct(e, { category: 'sports', price: 1 });
    let acked = 1;
    let running = true;
    const stale: string[] = [];
    const stop = await lab.chaos(0.3, 15, `${prefixOf(e)}:*`);
    try {
      const writer = (async () => {
        for (let price = 2; price <= 15; price++) {
          await patch(p.id, price);
          acked = price;
        }
        running = false;
      })();
      const readers = Array.from({ length: 3 }, async () => {
        while (running) {
          const floor = acked;
          const one = await product(p.id);
          if (one.price < floor) stale.push(`product ${one.price} < ${floor}`);
          const row = await listed(p.id);
          if (row.price < floor) stale.push(`list ${row.price} < ${floor}`);
        }
      });
      await Promise.all([writer, ...readers]);
    } finally {
      expect((await stop()).rounds).toBeGreaterThan(0);
    }
    expect(stale).toEqual([]);
  });
});
