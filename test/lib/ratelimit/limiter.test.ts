/**
 * The limiters against real Redis through the gateway: each algorithm limits, one round trip per
 * check (zero from the block cache), exact counts under 100 concurrent calls, compound checks that
 * consume nothing when refused, and the pinned script SHA.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { describe, expect, test } from 'vitest';
import { keySchema } from 'edge-redis/keys';
import { createCompoundRatelimit, createRatelimit, LruMap, SCRIPTS, type LimitResult } from 'edge-redis/ratelimit';
import { countTrips } from '../../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const redis = new Redis({ url, token: env.UPSTASH_REDIS_REST_TOKEN });
const fresh = () => keySchema({ app: `t${crypto.randomUUID().slice(0, 8)}`, env: 'test' });
const admitted = (rs: LimitResult[]) => rs.filter((r) => r.success).length;
const burst = <T>(n: number, fn: () => Promise<T>) => Promise.all(Array.from({ length: n }, fn));
const HOUR = 3_600_000;

describe('script', () => {
  test('the SHA of the limit script is pinned', async () => {
    expect(Object.keys(SCRIPTS)).toEqual(['limit']);
    const digest = await crypto.subtle.digest('SHA-1', new TextEncoder().encode(SCRIPTS.limit.src));
    const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    expect(hex).toBe('f913ba5f89a2d8c97dfef1d23b7843843bece31e');
    expect(SCRIPTS.limit.sha).toBe(hex);
  });
});

describe('LruMap (the bounded block cache)', () => {
  test('keeps at most max entries and evicts the least recently used', () => {
    const m = new LruMap<string, number>(3);
    m.set('a', 1).set('b', 2).set('c', 3);
    expect(m.get('a')).toBe(1); // a is now the most recent
    m.set('d', 4);
    expect([...m.keys()]).toEqual(['c', 'a', 'd']);
    m.set('c', 30); // an update refreshes too
    m.set('e', 5);
    expect(m.size).toBe(3);
    expect([...m.entries()]).toEqual([['d', 4], ['c', 30], ['e', 5]]);
    expect(m.has('a')).toBe(false);
    expect(() => new LruMap(0)).toThrow(RangeError);
  });

  test('an evicted identifier goes back to Redis; one still cached costs no round trip', async () => {
    const keys = fresh();
    const limiter = createRatelimit({ redis, name: 'lru', keys, algorithm: 'fixedWindow', limit: 1, windowMs: HOUR, cacheSize: 2 });
    for (const id of ['a', 'b', 'c']) {
      await limiter.limit(id);
      expect((await limiter.limit(id)).success).toBe(false); // blocked: now in the cache
    }
    const cached = await countTrips(url, () => limiter.limit('c'));
    expect(cached.result).toMatchObject({ success: false, reason: 'cacheBlock' });
    expect(cached.count).toBe(0);
    const evicted = await countTrips(url, () => limiter.limit('a'));
    expect(evicted.result.success).toBe(false);
    expect(evicted.result.reason).toBeUndefined();
    expect(evicted.commands).toEqual(['evalsha']);
  });
});

describe.each(['slidingLog', 'slidingWindow', 'fixedWindow', 'tokenBucket'] as const)('%s', (algorithm) => {
  const make = (keys = fresh(), limit = 3) =>
    algorithm === 'tokenBucket'
      ? createRatelimit({ redis, name: 'alg', keys, algorithm, limit, refillRate: limit, intervalMs: HOUR })
      : createRatelimit({ redis, name: 'alg', keys, algorithm, limit, windowMs: HOUR });

  test('admits up to the limit, then refuses with a future reset', async () => {
    const limiter = make();
    const before = Date.now();
    const rs: LimitResult[] = [];
    for (let i = 0; i < 4; i++) rs.push(await limiter.limit('user-1'));
    expect(rs.map((r) => r.success)).toEqual([true, true, true, false]);
    expect(rs.map((r) => r.remaining)).toEqual([2, 1, 0, 0]);
    expect(rs[3]).toMatchObject({ limit: 3, failed: ['alg'] });
    expect(rs[3]!.reset).toBeGreaterThan(before);
    expect((await limiter.limit('user-2')).success).toBe(true); // another identifier, another count
  });

  test('a warm check is one round trip, a single EVALSHA', async () => {
    const limiter = make();
    await limiter.limit('warm-up'); // loads the script into Redis if nobody has yet
    const { result, count, commands } = await countTrips(url, () => limiter.limit('w'));
    expect(result.success).toBe(true);
    expect(count).toBe(1);
    expect(commands).toEqual(['evalsha']);
  });

  test('a cost takes that many units', async () => {
    const limiter = make(fresh(), 10);
    expect(await limiter.limit('c', { cost: 4 })).toMatchObject({ success: true, remaining: 6 });
    expect(await limiter.limit('c', { cost: 6 })).toMatchObject({ success: true, remaining: 0 });
    expect((await limiter.limit('c')).success).toBe(false);
  });

  test('a per-call limit (an override) replaces the configured one', async () => {
    const limiter = make(fresh(), 1);
    const gold: LimitResult[] = [];
    for (let i = 0; i < 6; i++) gold.push(await limiter.limit('gold', { limit: 5 }));
    expect(gold.map((r) => r.success)).toEqual([true, true, true, true, true, false]);
    expect(gold[0]!.limit).toBe(5);
    expect((await limiter.limit('plain')).success).toBe(true);
    expect((await limiter.limit('plain')).success).toBe(false);
  });
});

describe('Upstash algorithms and the block cache', () => {
  test.each(['slidingWindow', 'fixedWindow', 'tokenBucket'] as const)('%s: once refused, the next refusal costs zero round trips', async (algorithm) => {
    const keys = fresh();
    const limiter =
      algorithm === 'tokenBucket'
        ? createRatelimit({ redis, name: 'bc', keys, algorithm, limit: 1, refillRate: 1, intervalMs: HOUR })
        : createRatelimit({ redis, name: 'bc', keys, algorithm, limit: 1, windowMs: HOUR });
    await limiter.limit('x');
    const refused = await countTrips(url, () => limiter.limit('x'));
    expect(refused.result.success).toBe(false);
    expect(refused.count).toBe(1);
    const cached = await countTrips(url, () => limiter.limit('x'));
    expect(cached.result).toMatchObject({ success: false, reason: 'cacheBlock', remaining: 0 });
    expect(cached.count).toBe(0);
  });

  test('keys live under the app prefix, hash-tagged by name and identifier (one Cluster slot per caller)', async () => {
    const keys = fresh();
    const limiter = createRatelimit({ redis, name: 'sw', keys, algorithm: 'slidingWindow', limit: 5, windowMs: HOUR });
    await limiter.limit('u:7');
    const bucket = Math.floor(Date.now() / HOUR);
    const found = await redis.get<number>(`${keys.slotted('rl', 'sw:u:7')}:${bucket}`);
    expect(found).toBe(1);
  });
});

describe('accuracy: 100 concurrent calls against a limit of 10', () => {
  test('sliding log admits exactly 10 and stores exactly 10 members', async () => {
    const keys = fresh();
    const limiter = createRatelimit({ redis, name: 'acc', keys, algorithm: 'slidingLog', limit: 10, windowMs: HOUR });
    const rs = await burst(100, () => limiter.limit('hot'));
    expect(admitted(rs)).toBe(10);
    expect(await redis.zcard(keys.slotted('rl', 'acc:hot'))).toBe(10);
  });

  test('token bucket admits exactly 10', async () => {
    const limiter = createRatelimit({ redis, name: 'acc', keys: fresh(), algorithm: 'tokenBucket', limit: 10, refillRate: 10, intervalMs: HOUR });
    expect(admitted(await burst(100, () => limiter.limit('hot')))).toBe(10);
  });

  test('compound (sliding log + fixed window, two identity parts) admits exactly 10', async () => {
    const limiter = createCompoundRatelimit({
      redis,
      name: 'acc', keys: fresh(), limits: [{ name: 'a', limit: 10, windowMs: HOUR }, { name: 'b', limit: 50, windowMs: HOUR, algorithm: 'fixedWindow' }],
    });
    expect(admitted(await burst(100, () => limiter.limit({ user: 'u', ip: '198.51.100.1' })))).toBe(10);
  });

  test('sliding window stays within its documented bound: exactly 10 inside one window, at most 2 × 10 across a boundary', async () => {
    const limiter = createRatelimit({ redis, name: 'acc', keys: fresh(), algorithm: 'slidingWindow', limit: 10, windowMs: HOUR });
    const rs = await burst(100, () => limiter.limit('hot'));
    const windows = new Set(rs.map((r) => r.reset)).size;
    if (windows === 1) expect(admitted(rs)).toBe(10);
    expect(admitted(rs)).toBeGreaterThanOrEqual(10);
    expect(admitted(rs)).toBeLessThanOrEqual(20);
  });
});

describe('sliding log state in Redis', () => {
  test('a refused call adds nothing; cost N adds N members; the key expires with the window', async () => {
    const keys = fresh();
    const limiter = createRatelimit({ redis, name: 'log', keys, algorithm: 'slidingLog', limit: 5, windowMs: 60_000 });
    const key = keys.slotted('rl', 'log:u1');
    expect(await limiter.limit('u1', { cost: 3 })).toMatchObject({ success: true, remaining: 2 });
    expect(await redis.zcard(key)).toBe(3);
    const refused = await limiter.limit('u1', { cost: 3 });
    expect(refused).toMatchObject({ success: false, remaining: 2, failed: ['log'] });
    expect(await redis.zcard(key)).toBe(3);
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000);
    // Members are unique per call even within one millisecond.
    const members = await redis.zrange<string[]>(key, 0, -1);
    expect(new Set(members).size).toBe(3);
  });

  test('cost 0 peeks without writing; a bad cost is a RangeError', async () => {
    const keys = fresh();
    const limiter = createRatelimit({ redis, name: 'log', keys, algorithm: 'slidingLog', limit: 2, windowMs: 60_000 });
    await limiter.limit('p');
    expect(await limiter.limit('p', { cost: 0 })).toMatchObject({ success: true, remaining: 1 });
    expect(await redis.zcard(keys.slotted('rl', 'log:p'))).toBe(1);
    expect(() => limiter.limit('p', { cost: 1.5 })).toThrow(RangeError);
    expect(() => limiter.limit('p', { cost: -1 })).toThrow(RangeError);
  });
});

describe('compound policies', () => {
  const policy = (keys = fresh()) =>
    createCompoundRatelimit({
      redis,
      name: 'api',
      keys,
      limits: [
        { name: 'burst', limit: 3, windowMs: 60_000 },
        { name: 'daily', limit: 4, windowMs: 86_400_000, algorithm: 'fixedWindow', by: 'user' },
      ],
    });

  test('one round trip per check, every limit reported, keys in one hash slot', async () => {
    const keys = fresh();
    const limiter = policy(keys);
    await limiter.limit({ user: 'warm', ip: '192.0.2.1' });
    const { result, commands } = await countTrips(url, () => limiter.limit({ user: 'u1', ip: '192.0.2.2' }));
    expect(commands).toEqual(['evalsha']);
    expect(result.success).toBe(true);
    expect(result.policies.map((p) => `${p.name}/${p.by}=${p.remaining}`)).toEqual(['burst/user=2', 'burst/ip=2', 'daily/user=3']);
    expect(await redis.zcard(keys.slotted('rl', 'api', 'burst', 'ip', '192.0.2.2'))).toBe(1);
    expect(await redis.hgetall(keys.slotted('rl', 'api', 'daily', 'user', 'u1'))).toMatchObject({ n: 1 });
  });

  test('a refusal by one limit consumes nothing from the others', async () => {
    const keys = fresh();
    const limiter = policy(keys);
    for (let i = 0; i < 3; i++) expect((await limiter.limit({ user: 'u1', ip: '192.0.2.10' })).success).toBe(true);
    // The user's burst is spent; a new IP must not be charged and the daily counter must not move.
    const refused = await limiter.limit({ user: 'u1', ip: '192.0.2.99' });
    expect(refused).toMatchObject({ success: false, failed: ['burst'], remaining: 0 });
    expect(await redis.zcard(keys.slotted('rl', 'api', 'burst', 'ip', '192.0.2.99'))).toBe(0);
    expect(await redis.hgetall(keys.slotted('rl', 'api', 'daily', 'user', 'u1'))).toMatchObject({ n: 3 });
    expect(refused.policies.find((p) => p.name === 'burst' && p.by === 'ip')).toMatchObject({ success: true, remaining: 3 });
  });

  test('a refusal by the fixed window leaves the sliding log untouched', async () => {
    const keys = fresh();
    const limiter = createCompoundRatelimit({
      redis,
      name: 'day', keys, limits: [{ name: 'burst', limit: 10, windowMs: 60_000 }, { name: 'daily', limit: 2, windowMs: 86_400_000, algorithm: 'fixedWindow' }],
    });
    await limiter.limit('u3');
    await limiter.limit('u3');
    const refused = await limiter.limit('u3');
    expect(refused).toMatchObject({ success: false, failed: ['daily'], limit: 2, remaining: 0 });
    expect(refused.reset).toBeGreaterThan(Date.now());
    expect(await redis.zcard(keys.slotted('rl', 'day', 'burst', 'id', 'u3'))).toBe(2);
    expect(await redis.hgetall(keys.slotted('rl', 'day', 'daily', 'id', 'u3'))).toMatchObject({ n: 2 });
  });

  test('per-call limits by name; a bare number is refused for several limits', async () => {
    const limiter = policy();
    const r = await limiter.limit({ user: 'u', ip: '192.0.2.5' }, { limit: { burst: 100 } });
    expect(r.policies.filter((p) => p.name === 'burst').map((p) => p.limit)).toEqual([100, 100]);
    expect(() => limiter.limit({ user: 'u' }, { limit: 5 })).toThrow(TypeError);
    expect(() => createCompoundRatelimit({ redis, name: 'x', keys: fresh(), limits: [{ name: 'a', limit: 1, windowMs: 1 }, { name: 'a', limit: 2, windowMs: 1 }] })).toThrow(TypeError);
  });
});
