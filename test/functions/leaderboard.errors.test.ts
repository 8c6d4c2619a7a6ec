/** GET /leaderboard/best-sellers, errors: limit validation and Redis down. */
import { describe, expect, inject, it } from 'vitest';
import { call, expectProblem, freshIp, ownEnv } from './checkout.support.ts';

const shop = ownEnv();

describe('GET /leaderboard/best-sellers errors', () => {
  it.each(['0', '101', '-1', 'abc', '2.5', ''])('limit=%s is 400 naming `limit`', async (limit) => {
    const body = expectProblem(await call(shop, `/leaderboard/best-sellers?limit=${limit}`, { ip: freshIp() }), 400, 'bad_request');
    expect(body['errors']).toEqual([{ in: 'query', field: 'limit', message: expect.any(String) }]);
  });

  it('unknown paths under /leaderboard are 404 problem+json', async () => {
    expectProblem(await call(shop, '/leaderboard/worst-sellers', { ip: freshIp() }), 404, 'not_found');
  });

  it('Redis down: 503 problem+json with Retry-After, no internals', async () => {
    const down = { ...shop, UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') };
    const r = await call(down, '/leaderboard/best-sellers', { ip: freshIp() });
    expectProblem(r, 503, 'unavailable');
    expect(r.res.headers.get('retry-after')).toBe('1');
    expect(r.text).not.toMatch(/zrange|127\.0\.0\.1|leaderboard:/i);
  });
});
