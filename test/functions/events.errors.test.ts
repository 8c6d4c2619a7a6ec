/** GET /events/inventory, errors: Redis out of reach answers 503 problem+json before any stream. */
import { describe, expect, inject, it } from 'vitest';
import { call, expectProblem, freshIp, ownEnv } from './checkout.support.ts';

const shop = ownEnv();

describe('GET /events/inventory errors', () => {
  it.each([
    ['nothing listens at the REST URL', { UPSTASH_REDIS_REST_URL: inject('closedUrl') }],
    ['the gateway is up but its Redis is down', { UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') }],
    ['the token is wrong', { UPSTASH_REDIS_REST_TOKEN: 'not-the-token' }],
  ])('%s: 503 problem+json with Retry-After, not an event stream', async (_, overrides) => {
    const r = await call({ ...shop, ...overrides }, '/events/inventory', { ip: freshIp() });
    expectProblem(r, 503, 'unavailable');
    expect(r.res.headers.get('retry-after')).toBe('2');
    expect(r.text).not.toMatch(/127\.0\.0\.1|subscribe|token/i);
  });

  it('unknown event streams are 404 problem+json', async () => {
    expectProblem(await call(shop, '/events/products', { ip: freshIp() }), 404, 'not_found');
  });
});
