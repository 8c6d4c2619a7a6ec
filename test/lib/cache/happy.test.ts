import { env } from 'cloudflare:workers';
import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test';
import { Redis } from '@upstash/redis/cloudflare';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { createCache, SCRIPTS, type CacheEvent, type CacheOptions } from 'edge-redis/cache';
import { cacheHeaders } from 'edge-redis/hono';
import { keySchema } from 'edge-redis/keys';
import { countTrips } from '../../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha1 = async (s: string) =>
  Array.from(new Uint8Array(await crypto.subtle.digest('SHA-1', new TextEncoder().encode(s))), (b) => b.toString(16).padStart(2, '0')).join('');

function setup(options: Partial<CacheOptions> = {}) {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const onError = vi.fn();
  const cache = createCache({ redis, keys, onError, ...options });
  const entry = (key: string) => keys.slotted('cache', key);
  const lock = (key: string) => keys.slotted('cache', key, 'lock');
  return { keys, cache, onError, entry, lock };
}

/** A loader that does not settle until `open()`, to hold a load in flight. */
function gated<T>(value: T) {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const loader = vi.fn(async () => {
    await gate;
    return value;
  });
  return { loader, open };
}

beforeAll(async () => {
  // Warm EVALSHA, so every round-trip count below is exact.
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

describe('scripts and construction', () => {
  it('pins each SHA: sha1(src) and SCRIPT LOAD agree with the exported constant', async () => {
    expect(Object.keys(SCRIPTS).sort()).toEqual(['read', 'write']);
    for (const [name, { src, sha }] of Object.entries(SCRIPTS)) {
      expect(await sha1(src), name).toBe(sha);
      expect(await redis.scriptLoad(src), name).toBe(sha);
    }
  });

  it('construction does no I/O', async () => {
    const { trips } = await countTrips(url, async () => createCache({ redis, keys: keySchema({ app: 'x', env: 'y' }) }));
    expect(trips).toEqual([]);
  });

  it('rejects a nonsensical policy at construction', () => {
    expect(() => createCache({ redis, keys: keySchema(), defaults: { ttl: 0 } })).toThrow(RangeError);
    expect(() => createCache({ redis, keys: keySchema(), defaults: { jitter: 1 } })).toThrow(RangeError);
  });
});

describe('getOrLoad: hit and miss', () => {
  it('a miss runs the loader once in 2 round trips (read+lock, then one write); the next call is a 1-trip hit', async () => {
    const { cache, entry, lock, keys } = setup();
    const loader = vi.fn(async () => ({ id: 1, name: 'lamp' }));
    const miss = await countTrips(url, () => cache.getOrLoad('product:1', loader, { tags: ['products'], ttl: 60_000, jitter: 0 }));
    expect(miss.result).toMatchObject({ value: { id: 1, name: 'lamp' }, status: 'miss', reason: 'absent' });
    expect(loader).toHaveBeenCalledTimes(1);
    expect(miss.trips.map((t) => t.commands)).toEqual([['evalsha', 'set'], ['evalsha']]);

    // Redis state: one envelope stamped with the tag's version (created by the read: there was none,
    // which is "unknown", never "0"), the lock freed, PX = ttl.
    const version = await redis.get<string>(keys.key('cache', 'tag', 'products'));
    expect(version).toMatch(/^v[0-9a-f]{18}$/);
    expect(await redis.get(entry('product:1'))).toMatchObject({ v: { id: 1, name: 'lamp' }, t: { products: version } });
    expect(await redis.exists(lock('product:1'))).toBe(0);
    const pttl = await redis.pttl(entry('product:1'));
    expect(pttl).toBeGreaterThan(59_000);
    expect(pttl).toBeLessThanOrEqual(60_000);

    const again = vi.fn(async () => ({ id: 1, name: 'other' }));
    const hit = await countTrips(url, () => cache.getOrLoad('product:1', again, { tags: ['products'] }));
    expect(hit.count).toBe(1);
    expect(hit.trips[0]?.commands).toEqual(['evalsha', 'set']);
    expect(hit.result).toMatchObject({ value: { id: 1, name: 'lamp' }, status: 'hit', reason: 'fresh' });
    expect(hit.result.freshUntil).toBeGreaterThan(hit.result.createdAt);
    expect(again).not.toHaveBeenCalled();
  });

  it('with a ctx the write after a miss goes to waitUntil: still 2 round trips in all', async () => {
    const { cache, entry } = setup();
    const ctx = createExecutionContext();
    const { result, count } = await countTrips(url, async () => {
      const r = await cache.getOrLoad('k', async () => 'v', { ctx });
      await waitOnExecutionContext(ctx);
      return r;
    });
    expect(result).toMatchObject({ value: 'v', status: 'miss' });
    expect(count).toBe(2);
    expect(await redis.get(entry('k'))).toMatchObject({ v: 'v' });
  });

  it('cacheHeaders: X-Cache and Age', () => {
    expect(cacheHeaders({ status: 'stale', createdAt: 1_000 }, 62_500)).toEqual({ 'X-Cache': 'STALE', Age: '61' });
    expect(cacheHeaders({ status: 'miss', createdAt: 5_000 }, 5_000)).toEqual({ 'X-Cache': 'MISS', Age: '0' });
  });
});

describe('stale-while-revalidate', () => {
  it('a stale hit answers at once with the stale value and refreshes once in waitUntil', async () => {
    const { cache } = setup();
    await cache.set('k', 'old', { ttl: 1, staleTtl: 60_000, jitter: 0 });
    await sleep(10);
    const { loader, open } = gated('new');
    const ctx = createExecutionContext();
    const { result, count } = await countTrips(url, async () => {
      // The loader is still blocked when this resolves: the answer did not wait for the refresh.
      const r = await cache.getOrLoad('k', loader, { ttl: 60_000, staleTtl: 60_000, ctx });
      open();
      await waitOnExecutionContext(ctx);
      return r;
    });
    expect(result).toMatchObject({ value: 'old', status: 'stale', reason: 'stale' });
    expect(count).toBe(2); // the read (which took the refresh lock) and the refresh's write
    expect(loader).toHaveBeenCalledTimes(1);

    const after = await cache.getOrLoad('k', async () => 'unused');
    expect(after).toMatchObject({ value: 'new', status: 'hit' });
  });

  it('two isolates hitting the same stale entry run one refresh; both get the stale value', async () => {
    const { cache, keys } = setup();
    const other = createCache({ redis: new Redis({ url, token }), keys });
    await cache.set('k', 'old', { ttl: 1, staleTtl: 60_000, jitter: 0 });
    await sleep(10);
    const { loader, open } = gated('new');
    const ctxs = [createExecutionContext(), createExecutionContext()] as const;
    const rs = await Promise.all([cache.getOrLoad('k', loader, { ctx: ctxs[0] }), other.getOrLoad('k', loader, { ctx: ctxs[1] })]);
    expect(rs.map((r) => [r.value, r.status])).toEqual([['old', 'stale'], ['old', 'stale']]);
    open();
    await Promise.all(ctxs.map((c) => waitOnExecutionContext(c)));
    expect(loader).toHaveBeenCalledTimes(1);
  });
});

describe('single flight', () => {
  it('20 isolates (20 clients and caches) missing one key at once call a slow loader once; all get the value', async () => {
    const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
    const caches = Array.from({ length: 20 }, () => createCache({ redis: new Redis({ url, token }), keys }));
    let calls = 0;
    const loader = async () => {
      calls++;
      await sleep(300);
      return { hot: true };
    };
    const results = await Promise.all(caches.map((c) => c.getOrLoad('hot', loader)));
    expect(calls).toBe(1);
    expect(results.every((r) => r.value.hot)).toBe(true);
    // MISS only on the one response whose request ran the loader.
    expect(results.filter((r) => r.status === 'miss')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'hit' && r.reason === 'waited')).toHaveLength(19);
  });

  it('20 concurrent calls in one isolate: one loader call, one lock attempt, 2 round trips', async () => {
    const { cache } = setup();
    const loader = vi.fn(async () => {
      await sleep(50);
      return 7;
    });
    const { result, trips } = await countTrips(url, () => Promise.all(Array.from({ length: 20 }, () => cache.getOrLoad('k', loader))));
    expect(loader).toHaveBeenCalledTimes(1);
    expect(trips.map((t) => t.commands)).toEqual([['evalsha'], ['evalsha']]);
    expect(result.every((r) => r.value === 7)).toBe(true);
    expect(result.filter((r) => r.status === 'miss')).toHaveLength(1);
    expect(result.filter((r) => r.reason === 'joined')).toHaveLength(19);
  });

  it('caches built per request on one client share their loads (in-isolate dedupe across requests)', async () => {
    const { keys } = setup();
    const loader = vi.fn(async () => {
      await sleep(20);
      return 'v';
    });
    const perRequest = () => createCache({ redis, keys });
    const rs = await Promise.all([perRequest().getOrLoad('k', loader), perRequest().getOrLoad('k', loader)]);
    expect(loader).toHaveBeenCalledTimes(1);
    expect(rs.map((r) => r.reason).sort()).toEqual(['absent', 'joined']);
  });

  it('a joiner in the isolate waits at most waitMs for the shared load, then loads for itself', async () => {
    const { cache } = setup();
    const stuck = gated('first');
    const holder = cache.getOrLoad('k', stuck.loader);
    const r = await cache.getOrLoad('k', async () => 'second', { waitMs: 30 });
    expect(r).toMatchObject({ value: 'second', status: 'miss', reason: 'wait-timeout' });
    stuck.open();
    expect(await holder).toMatchObject({ value: 'first', status: 'miss' });
  });

  it('a waiter whose budget runs out loads for itself (documented), without waiting for the holder', async () => {
    const { cache, keys } = setup();
    const other = createCache({ redis: new Redis({ url, token }), keys });
    const slow = gated('first');
    const holder = cache.getOrLoad('k', slow.loader);
    await vi.waitFor(() => expect(slow.loader).toHaveBeenCalled());
    const r = await other.getOrLoad('k', async () => 'second', { waitMs: 50 });
    expect(r).toMatchObject({ value: 'second', status: 'miss', reason: 'wait-timeout' });
    slow.open();
    expect(await holder).toMatchObject({ value: 'first', status: 'miss' });
  });
});

describe('write-through and delete-on-write', () => {
  it('set is 1 round trip (2 with tags); update is a compare-and-set that loses no update', async () => {
    const { cache, keys } = setup();
    const plain = await countTrips(url, () => cache.set('n', 0));
    expect(plain.trips.map((t) => t.commands)).toEqual([['evalsha']]);
    const tagged = await countTrips(url, () => cache.set('m', 0, { tags: ['a'] }));
    expect(tagged.trips.map((t) => t.commands)).toEqual([['set'], ['evalsha']]);

    const caches = Array.from({ length: 5 }, () => createCache({ redis: new Redis({ url, token }), keys }));
    await Promise.all(caches.map((c) => c.update<number>('n', (n) => (n ?? 0) + 1)));
    expect(await cache.get('n')).toMatchObject({ value: 5, status: 'hit' });
  });

  it('invalidate deletes the entry, publishes the event in the same round trip, and fences a load in flight', async () => {
    const { cache, keys, entry } = setup();
    await cache.set('product:9', 'v1');
    const channel = keys.key('cache', 'events');
    const sub = redis.subscribe<CacheEvent>(channel);
    await new Promise((resolve) => sub.on('subscribe', resolve));
    const message = new Promise((resolve) => sub.on('message', ({ message }) => resolve(message)));
    try {
      const { trips } = await countTrips(url, () => cache.invalidate('product:9'));
      expect(trips).toHaveLength(1);
      expect([...(trips[0]?.commands ?? [])].sort()).toEqual(['publish', 'set', 'unlink']);
      expect(await redis.exists(entry('product:9'))).toBe(0);
      expect(await message).toMatchObject({ type: 'invalidate', key: 'product:9', at: expect.any(Number) });
    } finally {
      await sub.unsubscribe();
    }

    // A load that read the old state before the invalidation must not store it afterwards.
    const { loader, open } = gated('from before the update');
    const inFlight = cache.getOrLoad('product:10', loader);
    await vi.waitFor(() => expect(loader).toHaveBeenCalled());
    await cache.invalidate('product:10');
    open();
    expect(await inFlight).toMatchObject({ value: 'from before the update', status: 'miss' });
    expect(await redis.exists(entry('product:10'))).toBe(0);
    expect(await cache.getOrLoad('product:10', async () => 'fresh')).toMatchObject({ value: 'fresh', status: 'miss' });
  });

  it('set fences a load in flight too', async () => {
    const { cache } = setup();
    const { loader, open } = gated('old');
    const inFlight = cache.getOrLoad('k', loader);
    await vi.waitFor(() => expect(loader).toHaveBeenCalled());
    await cache.set('k', 'written');
    open();
    await inFlight;
    expect(await cache.get('k')).toMatchObject({ value: 'written', status: 'hit' });
  });
});

describe('tags', () => {
  it('an entry is invalid right after invalidateTag, even inside its stale window, and never served', async () => {
    const { cache, keys } = setup();
    const opts = { tags: ['products'], ttl: 1, staleTtl: 60_000, jitter: 0 };
    await cache.getOrLoad('p:1', async () => 'v1', opts);
    await sleep(10);
    expect(await cache.get('p:1', opts)).toMatchObject({ value: 'v1', status: 'stale' });

    const stamped = await redis.get<string>(keys.key('cache', 'tag', 'products'));
    const inv = await countTrips(url, () => cache.invalidateTag('products'));
    expect(inv.trips.map((t) => t.commands)).toEqual([['set', 'publish']]);
    const bumped = await redis.get<string>(keys.key('cache', 'tag', 'products'));
    expect(bumped).toMatch(/^v[0-9a-f]{18}$/);
    expect(bumped).not.toBe(stamped);

    expect(await cache.get('p:1', opts)).toMatchObject({ value: undefined, status: 'miss', reason: 'tag' });
    const loader = vi.fn(async () => 'v2');
    expect(await cache.getOrLoad('p:1', loader, opts)).toMatchObject({ value: 'v2', status: 'miss', reason: 'tag' });
    expect(loader).toHaveBeenCalledTimes(1);
  });

  it('a fresh entry is invalid after invalidateTag: 3 round trips (read, read that takes the lock, write)', async () => {
    const { cache } = setup();
    await cache.getOrLoad('p:2', async () => 'v1', { tags: ['a', 'b'] });
    await cache.invalidateTag(['b']);
    const { result, trips } = await countTrips(url, () => cache.getOrLoad('p:2', async () => 'v2', { tags: ['a', 'b'] }));
    expect(result).toMatchObject({ value: 'v2', status: 'miss', reason: 'tag' });
    expect(trips.map((t) => t.commands)).toEqual([['evalsha', 'set', 'set'], ['evalsha', 'set', 'set'], ['evalsha']]);
    expect(await cache.getOrLoad('p:2', async () => 'v3', { tags: ['a', 'b'] })).toMatchObject({ value: 'v2', status: 'hit' });
  });

  it('a load that read the tag version before invalidateTag stores an entry that is already dead', async () => {
    const { cache } = setup();
    const { loader, open } = gated('old');
    const inFlight = cache.getOrLoad('p:3', loader, { tags: ['products'] });
    await vi.waitFor(() => expect(loader).toHaveBeenCalled());
    await cache.invalidateTag('products');
    open();
    await inFlight;
    expect(await cache.get('p:3', { tags: ['products'] })).toMatchObject({ status: 'miss', reason: 'tag' });
  });

  it('reading with other tags than the entry was written with is a miss', async () => {
    const { cache } = setup();
    await cache.set('p:4', 'v', { tags: ['a'] });
    expect(await cache.get('p:4', { tags: ['a'] })).toMatchObject({ status: 'hit' });
    expect(await cache.get('p:4')).toMatchObject({ status: 'miss', reason: 'tag' });
    expect(await cache.get('p:4', { tags: ['a', 'b'] })).toMatchObject({ status: 'miss', reason: 'tag' });
  });
});

describe('pattern invalidation (slow path)', () => {
  it('removes only the matching entries and publishes the event', async () => {
    const { cache, entry } = setup();
    const names = ['user:123:a', 'user:123:b', 'user:1234:c', 'user:12:d', 'product:1'];
    await Promise.all(names.map((n) => cache.set(n, n)));
    const { result, commands } = await countTrips(url, () => cache.invalidatePattern('user:123:*', { count: 1_000, maxIterations: 10_000 }));
    expect(result).toEqual({ deleted: 2, complete: true, cursor: '0' });
    expect(commands).toContain('publish');
    expect(commands).not.toContain('keys');
    const exists = await Promise.all(names.map((n) => redis.exists(entry(n))));
    expect(exists).toEqual([0, 0, 1, 1, 1]);
  });

  it('respects maxKeys and maxIterations, and resumes from the returned cursor', async () => {
    const { cache } = setup();
    const names = Array.from({ length: 30 }, (_, i) => `bulk:${i}`);
    await Promise.all(names.map((n) => cache.set(n, 1)));

    const capped = await cache.invalidatePattern('bulk:*', { maxKeys: 10, count: 1_000, maxIterations: 10_000 });
    expect(capped).toMatchObject({ deleted: 10, complete: false });
    expect((await cache.getMany(names)).filter((r) => r.status === 'hit')).toHaveLength(20);

    // maxIterations: one SCAN step (COUNT 1 over a keyspace of many buckets) and no more.
    const oneScan = await countTrips(url, () => cache.invalidatePattern('bulk:*', { maxIterations: 1, count: 1 }));
    expect(oneScan.commands.filter((c) => c === 'scan')).toHaveLength(1);
    expect(oneScan.result.complete).toBe(false);
    const left = (await cache.getMany(names)).filter((r) => r.status === 'hit').length;
    expect(left).toBe(20 - oneScan.result.deleted);

    let cursor = oneScan.result.cursor;
    let complete = false;
    while (!complete) ({ cursor, complete } = await cache.invalidatePattern('bulk:*', { cursor, count: 1_000, maxIterations: 10_000 }));
    expect((await cache.getMany(names)).filter((r) => r.status === 'hit')).toHaveLength(0);
  });
});

describe('getMany', () => {
  it('reads hit, stale and miss in one round trip, each with its own staleness', async () => {
    const { cache } = setup();
    await cache.set('fresh', 'a', { tags: ['t'] });
    await cache.set('stale', 'b', { tags: ['t'], ttl: 1, staleTtl: 60_000, jitter: 0 });
    await sleep(10);
    const { result, trips } = await countTrips(url, () => cache.getMany<string>(['fresh', 'stale', 'missing'], { tags: ['t'] }));
    expect(trips.map((t) => t.commands)).toEqual([['evalsha', 'evalsha', 'evalsha', 'set']]);
    expect(result.map((r) => [r.key, r.value, r.status])).toEqual([
      ['fresh', 'a', 'hit'],
      ['stale', 'b', 'stale'],
      ['missing', undefined, 'miss'],
    ]);
  });
});

describe('negative caching and jitter', () => {
  it('caches null for negativeTtl, and not at all with negativeTtl 0', async () => {
    const { cache, entry, lock } = setup();
    const loader = vi.fn(async () => null);
    expect(await cache.getOrLoad('gone', loader, { negativeTtl: 5_000 })).toMatchObject({ value: null, status: 'miss' });
    expect(await cache.getOrLoad('gone', loader, { negativeTtl: 5_000 })).toMatchObject({ value: null, status: 'hit' });
    expect(loader).toHaveBeenCalledTimes(1);
    const pttl = await redis.pttl(entry('gone'));
    expect(pttl).toBeGreaterThan(4_000);
    expect(pttl).toBeLessThanOrEqual(5_000);

    const undef = vi.fn(async () => undefined);
    await cache.getOrLoad('nothing', undef, { negativeTtl: 0 });
    expect(await redis.exists(entry('nothing'), lock('nothing'))).toBe(0);
    await cache.getOrLoad('nothing', undef, { negativeTtl: 0 });
    expect(undef).toHaveBeenCalledTimes(2);
  });

  it('spreads the fresh time by ± jitter: every PTTL within bounds, not all equal', async () => {
    const { cache, entry } = setup();
    const names = Array.from({ length: 20 }, (_, i) => `j:${i}`);
    await Promise.all(names.map((n) => cache.getOrLoad(n, async () => n, { ttl: 100_000, staleTtl: 50_000, jitter: 0.1 })));
    const pttls = await Promise.all(names.map((n) => redis.pttl(entry(n))));
    for (const p of pttls) {
      expect(p).toBeGreaterThan(90_000 + 50_000 - 2_000);
      expect(p).toBeLessThanOrEqual(110_000 + 50_000);
    }
    expect(new Set(pttls).size).toBeGreaterThan(1);
  });
});
