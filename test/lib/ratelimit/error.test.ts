/**
 * Failure policy with real faults: a gateway whose Redis is stopped (503), a gateway slowed by
 * GATEWAY_LATENCY_MS=400 with a shorter budget, and a port where nothing listens (the client's own
 * network retries must not stretch the budget).
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { Hono } from 'hono';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { inject } from 'vitest';
import { keySchema } from 'edge-redis/keys';
import { authRateLimit, rateLimit, type RateLimitOptions } from 'edge-redis/hono';
import { createCompoundRatelimit, createRatelimit, RateLimitError, type Limiter } from 'edge-redis/ratelimit';
import { countTrips } from '../../support/round-trips.ts';

const token = env.UPSTASH_REDIS_REST_TOKEN;
const fresh = () => keySchema({ app: `t${crypto.randomUUID().slice(0, 8)}`, env: 'test' });
const logAt = (url: string, name = 'api'): Limiter =>
  createRatelimit({ redis: new Redis({ url, token }), name, keys: fresh(), algorithm: 'slidingLog', limit: 5, windowMs: 60_000 });

function appWith(options: RateLimitOptions, mount: 'all' | 'login' = 'all') {
  const app = new Hono();
  if (mount === 'all') app.use('*', rateLimit(options));
  else app.use('/login', authRateLimit(options));
  app.get('/x', (c) => c.text('ok'));
  app.post('/login', (c) => c.text('ok'));
  return app;
}
const req = { headers: { 'cf-connecting-ip': '203.0.113.50' } };

afterEach(() => {
  vi.restoreAllMocks();
});

describe('Redis down (the gateway answers 503)', () => {
  test('the core rejects with RateLimitError (code unavailable) with the cause attached', async () => {
    const err: unknown = await logAt(inject('downGatewayUrl')).limit('u').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitError);
    expect((err as RateLimitError).code).toBe('unavailable');
    expect((err as RateLimitError).cause).toBeInstanceOf(Error);
  });

  test('fail open: the request goes through, marked RateLimit-Status: unavailable; one warning per outage, no secrets', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const app = appWith({ limiter: logAt(inject('downGatewayUrl')), failure: 'open', identify: (c) => ({ apikey: c.req.header('x-api-key') }) });
    for (let i = 0; i < 3; i++) {
      const res = await app.request('/x', { headers: { ...req.headers, 'x-api-key': 'sk-secret-123' } });
      expect(res.status).toBe(200);
      expect(await res.text()).toBe('ok');
      expect(res.headers.get('RateLimit-Status')).toBe('unavailable');
      expect(res.headers.get('RateLimit')).toBeNull();
    }
    expect(warn).toHaveBeenCalledTimes(1);
    const logged = warn.mock.calls.flat().map(String).join(' ');
    expect(logged).toContain('failing open');
    for (const secret of ['sk-secret-123', token, '203.0.113.50']) expect(logged).not.toContain(secret);
  });

  test('fail closed: 503 problem+json', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    const app = appWith({ limiter: logAt(inject('downGatewayUrl')), failure: 'closed' });
    const res = await app.request('/x', req);
    const body = await res.text();
    expect(res.status, body).toBe(503);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.headers.get('Retry-After')).toBe('1');
    expect(JSON.parse(body)).toMatchObject({ status: 503, code: 'unavailable', instance: '/x' });
    expect(body).not.toMatch(/upstash|gateway|evalsha|command|NOSCRIPT/i);
  });

  test('authRateLimit fails closed by default; a route override can close one route of an open middleware', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    const auth = appWith({ limiter: logAt(inject('downGatewayUrl')) }, 'login');
    expect((await auth.request('/login', { ...req, method: 'POST' })).status).toBe(503);
    const mixed = appWith({ limiter: logAt(inject('downGatewayUrl')), overrides: { routes: { 'POST /login': { failure: 'closed' } } } });
    expect((await mixed.request('/x', req)).status).toBe(200);
    expect((await mixed.request('/login', { ...req, method: 'POST' })).status).toBe(503);
  });
});

describe('Redis slow (GATEWAY_LATENCY_MS=400) with a budget of 50 ms', () => {
  test.each(['slidingLog', 'slidingWindow', 'tokenBucket'] as const)('%s: the budget ends the wait with RateLimitError, not with an Upstash fail-open', async (algorithm) => {
    const redis = new Redis({ url: inject('slowGatewayUrl'), token });
    const limiter =
      algorithm === 'tokenBucket'
        ? createRatelimit({ redis, name: 'slow', keys: fresh(), algorithm, limit: 5, refillRate: 5, intervalMs: 60_000 })
        : createRatelimit({ redis, name: 'slow', keys: fresh(), algorithm, limit: 5, windowMs: 60_000 });
    const err: unknown = await limiter.limit('u', { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitError);
    expect((err as RateLimitError).code).toBe('timeout');
  });

  test('fail open lets the request through; fail closed answers 503', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    const limiter = createCompoundRatelimit({ redis: new Redis({ url: inject('slowGatewayUrl'), token }), name: 'slow', keys: fresh(), limits: [{ name: 'm', limit: 5, windowMs: 60_000 }] });
    const open = appWith({ limiter, timeoutMs: 50 });
    const res = await open.request('/x', req);
    expect(res.status).toBe(200);
    expect(res.headers.get('RateLimit-Status')).toBe('unavailable');
    const closed = appWith({ limiter, timeoutMs: 50, failure: 'closed' });
    expect((await closed.request('/x', req)).status).toBe(503);
    // The same limiter with a budget longer than the latency answers normally.
    const patient = appWith({ limiter, timeoutMs: 5000, failure: 'closed' });
    const ok = await patient.request('/x', req);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('RateLimit')).toMatch(/^"m";r=\d;t=\d+$/);
  });
});

describe('nothing listening (network errors, which the client retries)', () => {
  test('the budget holds: the check gives up before the client has spent its retries', async () => {
    // Default client: 5 retries with 50·e^i ms backoff, about 4.3 s in all; our budget is 100 ms.
    const url = inject('closedUrl');
    const limiter = createRatelimit({ redis: new Redis({ url, token }), name: 'closed', keys: fresh(), algorithm: 'slidingLog', limit: 5, windowMs: 60_000 });
    const { result: err, count } = await countTrips(url, () => limiter.limit('u', { timeoutMs: 100 }).catch((e: unknown) => e));
    expect(err).toBeInstanceOf(RateLimitError);
    expect((err as RateLimitError).code).toBe('timeout');
    expect(count).toBeGreaterThanOrEqual(1);
    expect(count).toBeLessThan(6);
  });
});
