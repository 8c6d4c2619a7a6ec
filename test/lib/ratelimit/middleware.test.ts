/**
 * The Hono middleware against real Redis: IETF draft-10 headers, 429 problem+json with Retry-After,
 * keys (IPv6 /64, user, API key, custom), per-key and per-route overrides, cost, waitUntil.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { Hono, type Context } from 'hono';
import { describe, expect, test } from 'vitest';
import { clientIp, rateLimit, type RateLimitOptions } from 'edge-redis/hono';
import { keySchema, type KeySchema } from 'edge-redis/keys';
import { createCompoundRatelimit, createRatelimit, ipKey, type LimitResult, type Limiter } from 'edge-redis/ratelimit';
import { createRedis } from 'edge-redis/redis';
import { countTrips } from '../../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const redis = new Redis({ url, token: env.UPSTASH_REDIS_REST_TOKEN });
const fresh = () => keySchema({ app: `t${crypto.randomUUID().slice(0, 8)}`, env: 'test' });
const log = (keys: KeySchema, limit: number, windowMs = 60_000): Limiter =>
  createRatelimit({ redis, name: 'api', keys, algorithm: 'slidingLog', limit, windowMs });

/** An app with the middleware in front of every route; each route answers 200 "ok". */
/** The tests' app: an authentication middleware of its own sets `user`; the limiter is told of it by `identify`. */
type TestEnv = { Variables: { user?: string | { id: string | number }; rateLimit?: LimitResult } };
const userOf = (u: TestEnv['Variables']['user']) => (u !== null && typeof u === 'object' ? String(u.id) : u);
const apiKey = (c: Context) => ({ apikey: c.req.header('x-api-key') });

function appWith(options: RateLimitOptions<TestEnv>, setup?: (app: Hono<TestEnv>) => void) {
  const app = new Hono<TestEnv>();
  setup?.(app);
  app.use('*', rateLimit(options));
  app.get('/x', (c) => c.text('ok'));
  app.get('/items/:id', (c) => c.text('ok'));
  app.post('/search', (c) => c.text('ok'));
  app.get('/me', (c) => c.json({ remaining: c.var.rateLimit?.remaining ?? null }));
  return app;
}
const from = (ip: string, headers: Record<string, string> = {}): RequestInit => ({ headers: { 'cf-connecting-ip': ip, ...headers } });
const statuses = async (app: Hono<TestEnv>, path: string, inits: RequestInit[]) => {
  const out: number[] = [];
  for (const init of inits) out.push((await app.request(path, init)).status);
  return out;
};

describe('headers (draft-ietf-httpapi-ratelimit-headers-10)', () => {
  test('RateLimit-Policy and RateLimit on success; X-RateLimit-* only when asked', async () => {
    const app = appWith({ limiter: log(fresh(), 3) });
    const res = await app.request('/x', from('203.0.113.1'));
    expect(res.status).toBe(200);
    expect(res.headers.get('RateLimit-Policy')).toBe('"api";q=3;w=60');
    const m = /^"api";r=2;t=(\d+)$/.exec(res.headers.get('RateLimit') ?? '');
    expect(m, res.headers.get('RateLimit') ?? 'missing').not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(Number(m![1])).toBeLessThanOrEqual(60);
    expect(res.headers.get('X-RateLimit-Limit')).toBeNull();

    const legacy = appWith({ limiter: log(fresh(), 3), legacyHeaders: true });
    const l = await legacy.request('/x', from('203.0.113.1'));
    expect(l.headers.get('X-RateLimit-Limit')).toBe('3');
    expect(l.headers.get('X-RateLimit-Remaining')).toBe('2');
    const reset = Number(l.headers.get('X-RateLimit-Reset'));
    expect(reset).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000));
    expect(reset).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 60);

    const none = appWith({ limiter: log(fresh(), 3), headers: false });
    expect((await none.request('/x', from('203.0.113.1'))).headers.get('RateLimit')).toBeNull();
  });

  test('past the limit: 429 problem+json with Retry-After and RateLimit r=0', async () => {
    const app = appWith({ limiter: log(fresh(), 2) });
    await app.request('/x', from('203.0.113.2'));
    await app.request('/x', from('203.0.113.2'));
    const res = await app.request('/x', from('203.0.113.2'));
    const body = await res.text();
    expect(res.status, body).toBe(429);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    const retryAfter = Number(res.headers.get('Retry-After'));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(res.headers.get('RateLimit')).toMatch(/^"api";r=0;t=\d+$/);
    expect(JSON.parse(body)).toMatchObject({ status: 429, code: 'rate_limited', failed: ['api'], retryAfter, instance: '/x' });
  });

  test('a compound policy lists every limit; the 429 names the one that refused', async () => {
    const limiter = createCompoundRatelimit({
      redis,
      name: 'api', keys: fresh(), limits: [{ name: 'burst', limit: 2, windowMs: 10_000 }, { name: 'daily', limit: 100, windowMs: 86_400_000, algorithm: 'fixedWindow' }],
    });
    const app = appWith({ limiter });
    const ok = await app.request('/x', from('203.0.113.3'));
    expect(ok.headers.get('RateLimit-Policy')).toBe('"burst";q=2;w=10, "daily";q=100;w=86400');
    expect(ok.headers.get('RateLimit')).toMatch(/^"burst";r=1;t=\d+, "daily";r=99;t=\d+$/);
    await app.request('/x', from('203.0.113.3'));
    const refused = await app.request('/x', from('203.0.113.3'));
    expect(refused.status).toBe(429);
    expect(await refused.json()).toMatchObject({ failed: ['burst'] });
  });
});

describe('one round trip per request, and waitUntil', () => {
  test('a warm request sends one EVALSHA; pending goes to waitUntil; the result is on c.var', async () => {
    const app = appWith({ limiter: log(fresh(), 5) });
    await app.request('/x', from('203.0.113.4'));
    const handed: Promise<unknown>[] = [];
    const ctx = { waitUntil: (p: Promise<unknown>) => void handed.push(p), passThroughOnException() {}, props: {} } as unknown as ExecutionContext;
    const { result: res, commands } = await countTrips(url, async () => app.request('/me', from('203.0.113.4'), {}, ctx));
    expect(commands).toEqual(['evalsha']);
    expect(await res.json()).toEqual({ remaining: 3 });
    expect(handed).toHaveLength(1);
    await Promise.all(handed);
  });
});

describe('keys', () => {
  test('ipKey: IPv4 whole, IPv6 by /64, mapped IPv4 unwrapped, junk refused', () => {
    expect(ipKey('198.51.100.7')).toBe('198.51.100.7');
    expect(ipKey('2001:DB8:0:1:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:0:1::/64');
    expect(ipKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(ipKey('[2001:db8:0:1::9]')).toBe('2001:db8:0:1::/64');
    expect(ipKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(ipKey('::1')).toBe('0:0:0:0::/64');
    expect(ipKey('::ffff:192.0.2.33')).toBe('192.0.2.33');
    expect(ipKey('64:ff9b::192.0.2.33')).toBe('64:ff9b:0:0::/64');
    for (const bad of ['', 'abc', '1.2.3.999', '1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', undefined]) expect(ipKey(bad), String(bad)).toBeUndefined();
  });

  test('IPv6: two addresses in one /64 share a count, another /64 has its own', async () => {
    const app = appWith({ limiter: log(fresh(), 2) });
    expect(await statuses(app, '/x', [from('2001:db8:1:2::1'), from('2001:db8:1:2:ffff:ffff:ffff:ffff'), from('2001:db8:1:2:0:0:0:abcd')])).toEqual([200, 200, 429]);
    expect(await statuses(app, '/x', [from('2001:db8:1:3::1')])).toEqual([200]);
  });

  test('API key: one count per key, stored as a hash (the raw key never reaches Redis)', async () => {
    const keys = fresh();
    const app = appWith({ limiter: log(keys, 1), identify: apiKey });
    expect(await statuses(app, '/x', [from('203.0.113.5', { 'x-api-key': 'k-one' }), from('203.0.113.6', { 'x-api-key': 'k-one' })])).toEqual([200, 429]);
    expect(await statuses(app, '/x', [from('203.0.113.5', { 'x-api-key': 'k-two' })])).toEqual([200]);
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode('k-one')));
    const hash = Array.from(digest.slice(0, 16), (b) => b.toString(16).padStart(2, '0')).join('');
    expect(await redis.zcard(keys.slotted('rl', `api:apikey:${hash}`))).toBe(1);
    expect(await redis.exists(keys.slotted('rl', 'api:apikey:k-one'))).toBe(0);
    // No key: counted by IP.
    expect(await statuses(app, '/x', [from('203.0.113.7'), from('203.0.113.7')])).toEqual([200, 429]);
  });

  test('user from c.var.user, falling back to the IP when anonymous; a custom key function', async () => {
    const keys = fresh();
    const app = appWith({ limiter: log(keys, 1), identify: (c) => ({ user: userOf(c.var.user) }) }, (a) =>
      a.use('*', async (c, next) => {
        const id = c.req.header('x-user');
        if (id) c.set('user', { id });
        await next();
      }),
    );
    expect(await statuses(app, '/x', [from('203.0.113.8', { 'x-user': 'u1' }), from('203.0.113.9', { 'x-user': 'u1' })])).toEqual([200, 429]);
    expect(await statuses(app, '/x', [from('203.0.113.8', { 'x-user': 'u2' })])).toEqual([200]);
    expect(await redis.zcard(keys.slotted('rl', 'api:user:u1'))).toBe(1);
    expect(await statuses(app, '/x', [from('203.0.113.10'), from('203.0.113.10')])).toEqual([200, 429]);

    const tenant = appWith({ limiter: log(keys, 1), identify: (c) => c.req.header('x-tenant') });
    expect(await statuses(tenant, '/x', [from('203.0.113.11', { 'x-tenant': 'acme' }), from('203.0.113.12', { 'x-tenant': 'acme' })])).toEqual([200, 429]);
    expect(await redis.zcard(keys.slotted('rl', 'api:key:acme'))).toBe(1);
  });

  test('several parts: a compound policy counts the user and the IP separately', async () => {
    const keys = fresh();
    const limiter = createCompoundRatelimit({ redis, name: 'both', keys, limits: [{ name: 'm', limit: 2, windowMs: 60_000 }] });
    const app = appWith({ limiter, identify: (c) => ({ user: userOf(c.var.user), ip: clientIp(c) }) }, (a) =>
      a.use('*', async (c, next) => {
        const id = c.req.header('x-user');
        if (id) c.set('user', id);
        await next();
      }),
    );
    // Two users behind one IP: the IP's count of 2 is reached first.
    expect(await statuses(app, '/x', [from('198.51.100.1', { 'x-user': 'a' }), from('198.51.100.1', { 'x-user': 'b' }), from('198.51.100.1', { 'x-user': 'c' })])).toEqual([200, 200, 429]);
    expect(await redis.zcard(keys.slotted('rl', 'both', 'm', 'ip', '198.51.100.1'))).toBe(2);
    expect(await redis.zcard(keys.slotted('rl', 'both', 'm', 'user', 'c'))).toBe(0);
  });
});

describe('cost and overrides', () => {
  test('cost per request, as a number or a function', async () => {
    const app = appWith({ limiter: log(fresh(), 5), cost: (c) => Number(c.req.header('x-cost') ?? 1) });
    const big = await app.request('/x', from('192.0.2.1', { 'x-cost': '4' }));
    expect(big.headers.get('RateLimit')).toMatch(/r=1;/);
    expect(await statuses(app, '/x', [from('192.0.2.1', { 'x-cost': '2' }), from('192.0.2.1')])).toEqual([429, 200]);
  });

  test('per-key override: the gold API key gets its own limit', async () => {
    const app = appWith({ limiter: log(fresh(), 1), identify: apiKey, overrides: { keys: { 'apikey:gold': { limit: 3 } } } });
    const gold = from('192.0.2.2', { 'x-api-key': 'gold' });
    expect(await statuses(app, '/x', [gold, gold, gold, gold])).toEqual([200, 200, 200, 429]);
    const res = await app.request('/x', from('192.0.2.2', { 'x-api-key': 'silver' }));
    expect(res.headers.get('RateLimit-Policy')).toBe('"api";q=1;w=60');
    expect(await statuses(app, '/x', [from('192.0.2.2', { 'x-api-key': 'silver' })])).toEqual([429]);
  });

  test('per-route override by "METHOD /pattern" or "/pattern"; a key override wins field by field', async () => {
    const app = appWith({
      limiter: log(fresh(), 4),
      overrides: { routes: { 'POST /search': { cost: 2 }, '/items/:id': { limit: 1 } }, keys: { 'ip:192.0.2.4': { cost: 1 } } },
    });
    const ip = from('192.0.2.3');
    const search = async (init: RequestInit) => (await app.request('/search', { ...init, method: 'POST' })).headers.get('RateLimit');
    expect(await search(ip)).toMatch(/r=2;/);
    expect(await search(ip)).toMatch(/r=0;/);
    // A route pattern, not the concrete path: /items/7 uses the limit of 1 (already exceeded here).
    expect(await statuses(app, '/items/7', [from('192.0.2.5'), from('192.0.2.5')])).toEqual([200, 429]);
    // The key override's cost 1 beats the route's cost 2.
    expect(await search(from('192.0.2.4'))).toMatch(/r=3;/);
  });
});

describe('concurrent mode (safe methods overlap the check with the handler)', () => {
  const batched = createRedis({ UPSTASH_REDIS_REST_URL: url, UPSTASH_REDIS_REST_TOKEN: env.UPSTASH_REDIS_REST_TOKEN }, { batch: 'task' });

  function concurrentApp(limit: number, keys: KeySchema, seen: string[]) {
    const limiter = createRatelimit({ redis: batched, name: 'api', keys, algorithm: 'slidingLog', limit, windowMs: 60_000 });
    const app = new Hono<TestEnv>();
    app.use('*', rateLimit({ limiter, concurrent: true }));
    app.get('/read', async (c) => {
      const value = await batched.get<string>(keys.key('probe'));
      seen.push('get');
      return c.json({ value });
    });
    app.post('/write', (c) => {
      seen.push('post');
      return c.text('ok');
    });
    return app;
  }

  test("a GET's check and the handler's own command share one HTTP request", async () => {
    const keys = fresh();
    const seen: string[] = [];
    const app = concurrentApp(2, keys, seen);
    await app.request('/read', from('203.0.113.90')); // load the script (EVALSHA miss → EVAL)
    const { result: res, trips } = await countTrips(url, async () => app.request('/read', from('203.0.113.90')));
    expect(res.status).toBe(200);
    expect(res.headers.get('RateLimit')).toMatch(/^"api";r=0;t=\d+$/);
    expect(trips).toMatchObject([{ path: '/pipeline', commands: ['evalsha', 'get'] }]);
  });

  test('a refused GET answers 429 although its handler ran; a refused POST never reaches its handler', async () => {
    const keys = fresh();
    const seen: string[] = [];
    const app = concurrentApp(1, keys, seen);
    expect((await app.request('/read', from('203.0.113.91'))).status).toBe(200);
    const refused = await app.request('/read', from('203.0.113.91'));
    expect(refused.status).toBe(429);
    expect(refused.headers.get('content-type')).toBe('application/problem+json');
    expect(refused.headers.get('Retry-After')).not.toBeNull();
    expect(seen).toEqual(['get', 'get']);
    expect((await app.request('/write', { method: 'POST', ...from('203.0.113.91') })).status).toBe(429);
    expect(seen).toEqual(['get', 'get']);
  });
});
