/** GET /leaderboard/best-sellers, security: read-only, public, no session, no write through it. */
import { describe, expect, it } from 'vitest';
import { call, createProduct, expectProblem, freshIp, ownEnv, withCart } from './checkout.support.ts';

const shop = ownEnv();

describe('GET /leaderboard/best-sellers security', () => {
  it('creates no session and sends no cookie, even when the request carries one', async () => {
    const p = await createProduct(shop);
    const sid = await withCart(shop, { [p]: 1 });
    const r = await call(shop, '/leaderboard/best-sellers', { ip: freshIp(), sid });
    expect(r.status, r.text).toBe(200);
    expect(r.res.headers.getSetCookie()).toEqual([]);
  });

  it('offers no write: POST/DELETE are 404 problem+json and change nothing', async () => {
    const ip = freshIp();
    const before = (await call(shop, '/leaderboard/best-sellers', { ip })).text;
    for (const method of ['POST', 'DELETE']) {
      expectProblem(await call(shop, '/leaderboard/best-sellers', { ip, method, body: '{"productId":1,"sold":1000}', headers: { 'content-type': 'application/json' } }), 404, 'not_found');
    }
    expect((await call(shop, '/leaderboard/best-sellers', { ip })).text).toBe(before);
  });

  it('an oversized or injected limit never reaches Redis as anything but a bounded number', async () => {
    const ip = freshIp();
    for (const limit of ['1e3', '10;FLUSHALL', '99999999999999999999', '%00']) {
      expectProblem(await call(shop, `/leaderboard/best-sellers?limit=${limit}`, { ip }), 400, 'bad_request');
    }
  });
});
