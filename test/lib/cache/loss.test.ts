/**
 * src/lib/cache/ when Redis forgets, on a private Redis of this file (test/support/faults.ts).
 * The README's invariant: after an invalidation is acknowledged, no read (getOrLoad, getMany, a
 * stale-while-revalidate refresh, a single-flight joiner) serves what the store held before it,
 * whichever of the cache's keys Redis lost: entries, tag versions, locks, tombstones. What may be
 * lost is only the cached copies (a miss, one more load).
 */
import { Redis } from '@upstash/redis/cloudflare';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createCache, type Cache } from 'edge-redis/cache';
import { globRegExp } from '../../../src/lib/cache/flights.ts';
import { keySchema, type KeySchema } from 'edge-redis/keys';
import { privateRedis, type PrivateRedis } from '../../support/faults.ts';

let lab: PrivateRedis;
beforeAll(async () => {
  lab = await privateRedis();
});
afterAll(() => lab?.stop());

/** A client per "isolate", like Workers get: separate in-isolate single flight. */
const client = () => new Redis({ ...{ url: lab.bindings.UPSTASH_REDIS_REST_URL, token: lab.bindings.UPSTASH_REDIS_REST_TOKEN }, enableAutoPipelining: true });

function setup() {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const onError = vi.fn();
  const cache = createCache({ redis: client(), keys, onError, defaults: { jitter: 0 } });
  return {
    keys, cache, onError,
    entry: (k: string) => keys.slotted('cache', k),
    lock: (k: string) => keys.slotted('cache', k, 'lock'),
    tag: (t: string) => keys.key('cache', 'tag', t),
    other: () => createCache({ redis: client(), keys, defaults: { jitter: 0 } }),
  };
}

/** A loader held until `open()`. */
function gated<T>(value: T) {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  return { loader: vi.fn(async () => (await gate, value)), open };
}

describe('a missing tag version is "unknown", never "version 0" and never an old one again', () => {
  it('the tag key deleted after an acknowledged invalidateTag: the entry from before is dead, for getOrLoad and getMany', async () => {
    const { cache, tag } = setup();
    const opts = { tags: ['products'], ttl: 60_000, staleTtl: 60_000 };
    await cache.getOrLoad('page:1', async () => 'price 10', opts);
    await cache.invalidateTag('products'); // acknowledged
    await lab.del(tag('products')); // and then lost
    expect(await cache.get('page:1', opts)).toMatchObject({ status: 'miss', reason: 'tag' });
    expect(await cache.getOrLoad('page:1', async () => 'price 12', opts)).toMatchObject({ value: 'price 12', status: 'miss' });
  });

  it('an entry written while the tag was missing is dead once the tag is bumped and lost again (no counter climbs back to its stamp)', async () => {
    const { cache, tag } = setup();
    const opts = { tags: ['t'] };
    await cache.getOrLoad('k', async () => 'v0', opts); // no tag yet: the read created one
    for (let i = 0; i < 3; i++) {
      await cache.invalidateTag('t');
      await lab.del(tag('t'));
      expect(await cache.get('k', opts), `round ${i}`).toMatchObject({ status: 'miss' });
    }
  });

  it('Redis flushed between a write and a read: every tagged entry is a miss, loaded again, then a hit', async () => {
    const { cache } = setup();
    await cache.set('a', 1, { tags: ['x'] });
    await lab.flushall();
    expect(await cache.get('a', { tags: ['x'] })).toMatchObject({ status: 'miss', reason: 'absent' });
    await cache.set('a', 2, { tags: ['x'] });
    await lab.del(await lab.client.keys('*tag*').then((ks) => ks[0]!));
    expect(await cache.get('a', { tags: ['x'] })).toMatchObject({ status: 'miss', reason: 'tag' });
  });
});

describe('a missing lock or tombstone is "unknown": a load in flight never writes back', () => {
  const cases: [string, (s: ReturnType<typeof setup>, key: string) => Promise<unknown>][] = [
    ['its lock deleted (evicted) during the load', (s, k) => lab.del(s.lock(k))],
    ['invalidate, then its tombstone deleted', async (s, k) => (await s.cache.invalidate(k), lab.del(s.lock(k)))],
    ['set, then its tombstone deleted', async (s, k) => (await s.cache.set(k, 'written'), lab.del(s.lock(k)))],
    ['Redis flushed during the load', () => lab.flushall()],
    ['Redis restarted empty during the load', () => lab.restart()],
  ];
  for (const [name, fault] of cases) {
    it(name, async () => {
      const s = setup();
      const { loader, open } = gated('read before');
      const inFlight = s.cache.getOrLoad('k', loader, { ttl: 60_000 });
      await vi.waitFor(() => expect(loader).toHaveBeenCalled());
      await fault(s, 'k');
      open();
      expect(await inFlight).toMatchObject({ value: 'read before', status: 'miss' }); // its own caller is served
      const stored = await lab.client.get<{ v: unknown }>(s.entry('k'));
      expect(stored?.v).not.toBe('read before');
      // The next read loads again (or finds what `set` wrote).
      expect((await s.cache.getOrLoad('k', async () => 'fresh')).value).toMatch(/fresh|written/);
    });
  }

  it('a stale-while-revalidate refresh whose lock is lost stores nothing; the entry is refreshed by the next reader', async () => {
    const s = setup();
    await s.cache.set('k', 'old', { ttl: 1, staleTtl: 60_000 });
    await new Promise((r) => setTimeout(r, 10));
    const { loader, open } = gated('refreshed before');
    const waits: Promise<unknown>[] = [];
    const r = await s.cache.getOrLoad('k', loader, { ttl: 60_000, staleTtl: 60_000, ctx: { waitUntil: (p) => void waits.push(p) } });
    expect(r).toMatchObject({ value: 'old', status: 'stale' });
    await s.cache.invalidate('k');
    await lab.del(s.lock('k'));
    open();
    await Promise.all(waits);
    expect(await lab.client.get(s.entry('k'))).toBeNull();
  });
});

describe('in-isolate single flight after an invalidation', () => {
  it('a request arriving after invalidate / invalidateTag / invalidatePattern does not join a load that read before it', async () => {
    for (const how of ['key', 'tag', 'pattern'] as const) {
      const s = setup();
      const { loader, open } = gated('before');
      const first = s.cache.getOrLoad('user:1:a', loader, { tags: ['t'] });
      await vi.waitFor(() => expect(loader).toHaveBeenCalled());
      if (how === 'key') await s.cache.invalidate('user:1:a');
      else if (how === 'tag') await s.cache.invalidateTag('t');
      else await s.cache.invalidatePattern('user:1:*');
      const after = s.cache.getOrLoad('user:1:a', async () => 'after', { tags: ['t'] });
      open();
      expect((await first).value, how).toBe('before');
      expect((await after).value, how).toBe('after');
    }
  });

  it('invalidatePattern fences loads in flight across isolates too (their lock keys go with the entries)', async () => {
    const s = setup();
    const { loader, open } = gated('before');
    const inFlight = s.other().getOrLoad('user:7:x', loader);
    await vi.waitFor(() => expect(loader).toHaveBeenCalled());
    expect(await s.cache.invalidatePattern('user:7:*', { count: 1_000, maxIterations: 10_000 })).toMatchObject({ deleted: 0, complete: true });
    open();
    await inFlight;
    expect(await lab.client.get(s.entry('user:7:x'))).toBeNull();
  });

  it('globRegExp reads Redis globs as Redis does', () => {
    expect(globRegExp('a:{user:1:*}').test('a:{user:1:x}')).toBe(true);
    expect(globRegExp('a:{user:1:*}').test('a:{user:12}')).toBe(false);
    expect(globRegExp('h?llo').test('hello')).toBe(true);
    expect(globRegExp('h[ae]llo').test('hallo')).toBe(true);
    expect(globRegExp('h[^e]llo').test('hello')).toBe(false);
    expect(globRegExp('a\\*b').test('a*b')).toBe(true);
    expect(globRegExp('a\\*b').test('axb')).toBe(false);
    expect(globRegExp('x.y+z').test('x.y+z')).toBe(true);
    expect(globRegExp('x.y+z').test('xAyyz')).toBe(false);
  });
});

/** The store of record in miniature: a value and the versions acknowledged as written. */
function store() {
  let value = 0;
  return { read: async () => value, write: () => ++value, get now() { return value; } };
}

describe('a random share of every key deleted again and again while readers and writers run', () => {
  it('no read that starts after an acknowledged invalidation serves an older value (getOrLoad with SWR, getMany, 4 isolates)', { timeout: 60_000 }, async () => {
    const keys: KeySchema = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
    const caches: Cache[] = Array.from({ length: 4 }, () => createCache({ redis: client(), keys, onError: () => undefined, defaults: { jitter: 0, waitMs: 200 } }));
    const db = store();
    let acked = 0;
    const violations: string[] = [];
    const stop = await lab.chaos(0.5, 10);
    let running = true;
    const opts = { tags: ['products'], ttl: 60_000, staleTtl: 60_000 };
    try {
      const writer = (async () => {
        for (let i = 0; i < 30; i++) {
          const v = db.write();
          const c = caches[i % caches.length]!;
          await Promise.all([c.invalidate('product:1'), c.invalidateTag('products')]);
          acked = v;
          await new Promise((r) => setTimeout(r, 5));
        }
        running = false;
      })();
      const readers = caches.map(async (c, n) => {
        while (running) {
          const floor = acked;
          const [one] = [await c.getOrLoad('product:1', db.read, opts)];
          if (one.value < floor) violations.push(`getOrLoad saw ${one.value} after ${floor} was acknowledged (${one.status}/${one.reason})`);
          const list = await c.getOrLoad('products:page:1', db.read, opts);
          if (list.value < floor) violations.push(`tagged page saw ${list.value} after ${floor} (${list.status}/${list.reason})`);
          const [many] = await c.getMany<number>(['products:page:1'], { tags: ['products'] });
          if (many && many.value !== undefined && many.value < floor) violations.push(`getMany saw ${many.value} after ${floor}`);
          if (n === 0) await new Promise((r) => setTimeout(r, 1));
        }
      });
      await Promise.all([writer, ...readers]);
    } finally {
      expect((await stop()).deleted).toBeGreaterThan(0);
    }
    expect(violations).toEqual([]);
    expect(db.now).toBe(30);
  });

  it('maxmemory with allkeys-random: Redis evicting as entries pile up never serves a value from before an acknowledged invalidation', { timeout: 60_000 }, async () => {
    const keys: KeySchema = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
    const cache = createCache({ redis: client(), keys, onError: () => undefined, defaults: { jitter: 0 } });
    const other = createCache({ redis: client(), keys, onError: () => undefined, defaults: { jitter: 0 } });
    const db = store();
    const evicted = async () => Number(/evicted_keys:(\d+)/.exec(String(await lab.client.exec(['INFO', 'stats'])))?.[1] ?? 0);
    const before = await evicted();
    const stale: string[] = [];
    const filler = 'x'.repeat(20_000);
    const opts = { tags: ['products'], ttl: 60_000, staleTtl: 60_000 };
    await lab.flushall();
    // A cap just above what Redis uses now: every few writes evict a random key, the cache's own too.
    const used = Number(/used_memory:(\d+)/.exec(String(await lab.client.exec(['INFO', 'memory'])))?.[1]);
    await lab.maxmemory(used + 400_000, 'allkeys-random');
    try {
      for (let round = 0; round < 120; round++) {
        await cache.getOrLoad('product:1', db.read, opts);
        await other.getOrLoad('page:1', db.read, opts);
        const v = db.write();
        await Promise.all([cache.invalidate('product:1'), cache.invalidateTag('products')]);
        // Writes after the acknowledged invalidation: Redis evicts random keys to make room, ours included.
        await Promise.all(Array.from({ length: 3 }, (_, i) => cache.set(`fill:${round}:${i}`, filler)));
        for (const [c, k] of [[other, 'product:1'], [cache, 'page:1']] as const) {
          const r = await c.getOrLoad(k, db.read, opts);
          if (r.value < v) stale.push(`${k} ${r.value} < ${v} (${r.status}/${r.reason}) in round ${round}`);
        }
      }
    } finally {
      await lab.maxmemory(0);
    }
    expect(stale).toEqual([]);
    expect(await evicted()).toBeGreaterThan(before);
  });
});
