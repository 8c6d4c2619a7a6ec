import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { beforeAll, describe, expect, it } from 'vitest';
import { keySchema } from 'edge-redis/keys';
import { PROBLEMS, edgeRedisProblem } from 'edge-redis/hono';
import { createLocks, LockError, SCRIPTS, type Lock } from 'edge-redis/lock';
import { countTrips } from '../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });

function setup() {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  return { keys, locks: createLocks({ redis, keys }) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const sha1 = async (s: string) =>
  Array.from(new Uint8Array(await crypto.subtle.digest('SHA-1', new TextEncoder().encode(s))), (b) => b.toString(16).padStart(2, '0')).join('');

describe('scripts', () => {
  it('pins each SHA: sha1(src) and SCRIPT LOAD agree with the exported constant', async () => {
    const names = Object.keys(SCRIPTS) as (keyof typeof SCRIPTS)[];
    expect(names.sort()).toEqual(['acquire', 'extend', 'inspect', 'release', 'semAcquire', 'semUpdate']);
    for (const name of names) {
      const { src, sha } = SCRIPTS[name];
      expect(await sha1(src), name).toBe(sha);
      expect(await redis.scriptLoad(src), name).toBe(sha);
    }
  });
});

describe('acquire / release / extend', () => {
  // SCRIPT LOAD makes every later call a warm EVALSHA, so round-trip counts are exact.
  beforeAll(async () => {
    await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
  });

  it('construction does no I/O', async () => {
    const { trips } = await countTrips(url, async () => createLocks({ redis, keys: keySchema({ app: 'x', env: 'y' }) }));
    expect(trips).toEqual([]);
  });

  it('uncontended acquire, extend and release are one EVALSHA round trip each', async () => {
    const { keys, locks } = setup();
    const key = keys.slotted('lock', 'order:7');

    const acq = await countTrips(url, () => locks.acquire('order:7'));
    expect(acq.count).toBe(1);
    expect(acq.commands).toEqual(['evalsha']);
    const lock = acq.result;
    if (!lock) throw new Error('not acquired');
    expect(lock.resource).toBe('order:7');
    expect(lock.token).toMatch(/^[0-9a-f]{32}$/);
    expect(lock.fence).toBe(1);
    expect(await redis.get(key)).toBe(`1:${lock.token}`);
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(9_000);
    expect(pttl).toBeLessThanOrEqual(10_000);
    // fence key has no TTL: fences keep increasing even after long idle periods.
    expect(await redis.pttl(keys.slotted('lock', 'order:7', 'fence'))).toBe(-1);

    const ext = await countTrips(url, () => lock.extend(1_500));
    expect(ext).toMatchObject({ result: true, count: 1, commands: ['evalsha'] });

    const rel = await countTrips(url, () => lock.release());
    expect(rel).toMatchObject({ result: true, count: 1, commands: ['evalsha'] });
    expect(await redis.exists(key)).toBe(0);
  });

  it('a contended attempt with waitMs 0 is one round trip and answers null', async () => {
    const { locks } = setup();
    const held = await locks.acquire('r');
    const { result, count } = await countTrips(url, () => locks.acquire('r'));
    expect(result).toBeNull();
    expect(count).toBe(1);
    await held?.release();
  });

  it('keys share one Cluster slot: lock and fence keys have the same hash tag', () => {
    const { keys } = setup();
    const tag = (k: string) => /\{[^}]*\}/.exec(k)?.[0];
    expect(tag(keys.slotted('lock', 'a:b'))).toBe('{a:b}');
    expect(tag(keys.slotted('lock', 'a:b', 'fence'))).toBe('{a:b}');
  });

  it('extend sets the remaining lease to exactly the given ms (not seconds)', async () => {
    const { keys, locks } = setup();
    const lock = await locks.acquire('r', { leaseMs: 10_000 });
    if (!lock) throw new Error('not acquired');
    const key = keys.slotted('lock', 'r');

    expect(await lock.extend(1_500)).toBe(true);
    const short = await redis.pttl(key);
    expect(short).toBeGreaterThan(1_400);
    expect(short).toBeLessThanOrEqual(1_500);

    expect(await lock.extend(60_250)).toBe(true);
    const long = await redis.pttl(key);
    expect(long).toBeGreaterThan(60_150);
    expect(long).toBeLessThanOrEqual(60_250);
    expect(await redis.get(key)).toBe(`${lock.fence}:${lock.token}`);
    await lock.release();
  });

  it('release is idempotent: a second release and a later extend make no round trip', async () => {
    const { locks } = setup();
    const lock = await locks.acquire('r');
    if (!lock) throw new Error('not acquired');
    expect(await lock.release()).toBe(true);
    const again = await countTrips(url, () => lock.release());
    expect(again).toMatchObject({ result: true, count: 0 });
    const ext = await countTrips(url, () => lock.extend(1_000));
    expect(ext).toMatchObject({ result: false, count: 0 });
  });

  it('fences strictly increase per resource, across releases and expiries', async () => {
    const { keys, locks } = setup();
    const fences: number[] = [];
    for (let i = 0; i < 3; i++) {
      const lock = await locks.acquire('r');
      if (!lock) throw new Error('not acquired');
      fences.push(lock.fence);
      await lock.release();
    }
    // A lease that lapses without release: the next holder still gets a larger fence.
    const lapsed = await locks.acquire('r', { leaseMs: 30 });
    if (!lapsed) throw new Error('not acquired');
    fences.push(lapsed.fence);
    const next = await locks.acquire('r', { waitMs: 10_000, retry: { minDelayMs: 5, maxDelayMs: 20 } });
    if (!next) throw new Error('not acquired after the lease lapsed');
    fences.push(next.fence);
    expect(fences).toEqual([1, 2, 3, 4, 5]);
    // Another resource has its own sequence.
    const other = await locks.acquire('other');
    expect(other?.fence).toBe(1);
    expect(await redis.get(keys.slotted('lock', 'r', 'fence'))).toBe(5);
  });

  it('50 concurrent contenders from 5 clients: never two holders, fences increase, all get it', { timeout: 120_000 }, async () => {
    const { keys } = setup();
    const clients = Array.from({ length: 5 }, () => createLocks({ redis: new Redis({ url, token }), keys }));
    let inside = 0;
    let maxInside = 0;
    let lastFence = 0;
    const seen: number[] = [];
    const results = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const locks = clients[i % clients.length];
        if (!locks) throw new Error('no client');
        const lock = await locks.acquire('hot', { waitMs: 100_000, retry: { minDelayMs: 5, maxDelayMs: 60 } });
        if (!lock) return false;
        inside++;
        maxInside = Math.max(maxInside, inside);
        const fenceOk = lock.fence > lastFence;
        lastFence = lock.fence;
        seen.push(lock.fence);
        // A real round trip inside the critical section lets the other contenders run meanwhile.
        await redis.incr(keys.key('work'));
        inside--; // before release: afterwards the next holder may already be running
        const released = await lock.release();
        return fenceOk && released;
      }),
    );
    expect(results.every(Boolean), JSON.stringify(results)).toBe(true);
    expect(maxInside).toBe(1);
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(await redis.get(keys.key('work'))).toBe(50);
    // Exactly one INCR of the fence per successful acquire; failed attempts mint nothing.
    expect(await redis.get(keys.slotted('lock', 'hot', 'fence'))).toBe(50);
  });

  it('a waiter sleeps no longer than the holder’s remaining lease', async () => {
    const { locks } = setup();
    const first = await locks.acquire('r', { leaseMs: 150 });
    expect(first).not.toBeNull();
    // With a 30 s backoff, only the PTTL cap lets this finish inside the test timeout: the second
    // attempt comes right after the lease ends.
    const { result, count } = await countTrips(url, () => locks.acquire('r', { waitMs: 60_000, retry: { minDelayMs: 30_000, maxDelayMs: 30_000 } }));
    expect(result?.fence).toBe(2);
    expect(count).toBe(2);
  });
});

describe('inspect', () => {
  it('shows holder (a hash of the token), fence and expiry in one round trip', async () => {
    const { locks } = setup();
    const free = await countTrips(url, () => locks.inspect('r'));
    expect(free).toMatchObject({ result: { held: false }, count: 1 });

    const lock = await locks.acquire('r', { leaseMs: 5_000 });
    if (!lock) throw new Error('not acquired');
    const { result: info, count } = await countTrips(url, () => locks.inspect('r'));
    expect(count).toBe(1);
    expect(info).toMatchObject({ held: true, fence: lock.fence, holder: lock.holder });
    expect(lock.holder).toBe(await sha1(lock.token));
    expect(info.expiresInMs).toBeGreaterThan(4_000);
    expect(info.expiresInMs).toBeLessThanOrEqual(5_000);
    expect(JSON.stringify(info)).not.toContain(lock.token);
    await lock.release();
    expect(await locks.inspect('r')).toEqual({ held: false });
  });
});

describe('withLock', () => {
  it('runs fn under the lock, passes it the lock, releases afterwards', async () => {
    const { keys, locks } = setup();
    const out = await locks.withLock('r', async (signal, lock) => {
      expect(signal.aborted).toBe(false);
      expect(await redis.get(keys.slotted('lock', 'r'))).toBe(`${lock.fence}:${lock.token}`);
      return lock.fence * 10;
    });
    expect(out).toBe(10);
    expect(await redis.exists(keys.slotted('lock', 'r'))).toBe(0);
  });

  it('releases when fn throws and rethrows fn’s error', async () => {
    const { keys, locks } = setup();
    const boom = new Error('boom');
    await expect(locks.withLock('r', async () => { throw boom; })).rejects.toBe(boom);
    expect(await redis.exists(keys.slotted('lock', 'r'))).toBe(0);
  });

  it('extends the lease while fn runs longer than the lease', async () => {
    const { keys, locks } = setup();
    const key = keys.slotted('lock', 'r');
    await locks.withLock('r', async (signal, lock) => {
      await sleep(1_500); // five leases of 300 ms
      expect(signal.aborted).toBe(false);
      expect(await redis.get(key)).toBe(`${lock.fence}:${lock.token}`);
    }, { leaseMs: 300 });
    expect(await redis.exists(key)).toBe(0);
  });

  it('aborts fn’s signal with a LockError lost when the lock is deleted out from under it', async () => {
    const { keys, locks } = setup();
    let reason: unknown;
    const run = locks.withLock('r', async (signal) => {
      await redis.del(keys.slotted('lock', 'r'));
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      reason = signal.reason;
      throw signal.reason;
    }, { leaseMs: 300 });
    await expect(run).rejects.toMatchObject({ name: 'LockError', code: 'lost' });
    expect(reason).toMatchObject({ name: 'LockError', code: 'lost' });
    expect((reason as LockError).resource).toBe('r');
  });

  it('aborts when someone else holds the lock after our lease lapsed, and leaves theirs alone', async () => {
    const { keys, locks } = setup();
    const key = keys.slotted('lock', 'r');
    let thief: Lock | null = null;
    await expect(locks.withLock('r', async (signal, lock) => {
      // Simulate a lapse: the key vanishes and another client takes the lock before the next extend.
      await redis.del(key);
      thief = await locks.acquire('r', { leaseMs: 20_000 });
      expect(thief?.fence).toBe(lock.fence + 1);
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      throw signal.reason;
    }, { leaseMs: 300 })).rejects.toMatchObject({ name: 'LockError', code: 'lost' });
    const t = thief as Lock | null;
    if (!t) throw new Error('thief did not acquire');
    expect(await redis.get(key)).toBe(`${t.fence}:${t.token}`);
    expect(await redis.pttl(key)).toBeGreaterThan(15_000);
  });

  it('throws a LockError busy (409 through edge-redis/hono) without calling fn when the lock stays busy', async () => {
    const { locks } = setup();
    const held = await locks.acquire('r');
    let called = false;
    const err = await locks.withLock('r', async () => { called = true; }, { waitMs: 50, retry: { minDelayMs: 10, maxDelayMs: 20 } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'LockError', code: 'busy', resource: 'r' });
    expect(PROBLEMS[edgeRedisProblem(err as LockError).code].status).toBe(409);
    expect(called).toBe(false);
    await held?.release();
  });

  it('forwards the caller’s signal to fn', async () => {
    const { locks } = setup();
    const ctrl = new AbortController();
    const reason = new Error('client went away');
    await expect(locks.withLock('r', async (signal) => {
      ctrl.abort(reason);
      expect(signal.aborted).toBe(true);
      throw signal.reason;
    }, { signal: ctrl.signal })).rejects.toBe(reason);
  });
});

describe('await using', () => {
  it('releases the lock when the block ends', async () => {
    const { keys, locks } = setup();
    const key = keys.slotted('lock', 'r');
    {
      await using lock = await locks.acquire('r');
      expect(lock).not.toBeNull();
      expect(await redis.exists(key)).toBe(1);
    }
    expect(await redis.exists(key)).toBe(0);
  });

  it('releases on throw too', async () => {
    const { keys, locks } = setup();
    const key = keys.slotted('lock', 'r');
    const body = async () => {
      await using lock = await locks.acquire('r');
      expect(lock).not.toBeNull();
      throw new Error('inside');
    };
    await expect(body()).rejects.toThrow('inside');
    expect(await redis.exists(key)).toBe(0);
  });

  it('Symbol.asyncDispose is the release', async () => {
    const { keys, locks } = setup();
    const lock = await locks.acquire('r');
    if (!lock) throw new Error('not acquired');
    const { count } = await countTrips(url, async () => { await lock[Symbol.asyncDispose](); });
    expect(count).toBe(1);
    expect(await redis.exists(keys.slotted('lock', 'r'))).toBe(0);
  });
});

describe('semaphore', () => {
  it('admits exactly N of 20 concurrent callers; acquire and release are one round trip', async () => {
    const { keys, locks } = setup();
    const sem = locks.semaphore('render', { limit: 4 });
    const key = keys.slotted('sem', 'render');
    const permits = await Promise.all(Array.from({ length: 20 }, () => sem.acquire()));
    const granted = permits.filter((p) => p !== null);
    expect(granted).toHaveLength(4);
    expect(await redis.zcard(key)).toBe(4);
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(9_000);
    expect(pttl).toBeLessThanOrEqual(10_000);

    const one = granted[0];
    if (!one) throw new Error('no permit');
    const rel = await countTrips(url, () => one.release());
    expect(rel).toMatchObject({ result: true, count: 1 });
    expect(await redis.zcard(key)).toBe(3);
    const acq = await countTrips(url, () => sem.acquire());
    expect(acq.count).toBe(1);
    expect(acq.result).not.toBeNull();
    expect(await sem.acquire()).toBeNull();
    expect(await redis.zcard(key)).toBe(4);
  });

  it('extend sets a permit’s lease in ms and keeps the set alive that long', async () => {
    const { keys, locks } = setup();
    const sem = locks.semaphore('s', { limit: 2, leaseMs: 5_000 });
    const key = keys.slotted('sem', 's');
    const p = await sem.acquire();
    if (!p) throw new Error('no permit');
    const ext = await countTrips(url, () => p.extend(30_000));
    expect(ext).toMatchObject({ result: true, count: 1 });
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(29_000);
    expect(pttl).toBeLessThanOrEqual(30_000);
    expect(await p.release()).toBe(true);
    expect(await p.release()).toBe(true);
    expect(await redis.exists(key)).toBe(0);
  });

  it('an expired permit frees its slot for a waiter, and cannot be released or extended afterwards', async () => {
    const { keys, locks } = setup();
    const sem = locks.semaphore('s', { limit: 1, leaseMs: 100 });
    const key = keys.slotted('sem', 's');
    const old = await sem.acquire();
    const fresh = await sem.acquire({ waitMs: 5_000, retry: { minDelayMs: 10, maxDelayMs: 30 } });
    if (!old || !fresh) throw new Error('no permit');
    expect(await old.extend(60_000)).toBe(false);
    expect(await old.release()).toBe(false);
    expect(await redis.zrange(key, 0, -1)).toEqual([fresh.token]);
    await fresh.release();
  });
});
