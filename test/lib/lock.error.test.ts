import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { describe, expect, inject, it } from 'vitest';
import { EdgeRedisError } from 'edge-redis';
import { PROBLEMS, edgeRedisProblem } from 'edge-redis/hono';
import { keySchema } from 'edge-redis/keys';
import { createLocks, LockError, SCRIPTS, type LockRedis } from 'edge-redis/lock';
import { countTrips } from '../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });
const newKeys = () => keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });

/** A client for the real gateway whose Redis process is stopped (it answers 503). */
const down = () => new Redis({ url: inject('downGatewayUrl'), token: inject('gatewayToken') });

describe('cancellation', () => {
  it('an already-aborted signal rejects with its reason and makes no round trip', async () => {
    const locks = createLocks({ redis, keys: newKeys() });
    const reason = new Error('cancelled');
    const { result, count } = await countTrips(url, () => locks.acquire('r', { signal: AbortSignal.abort(reason) }).catch((e: unknown) => e));
    expect(result).toBe(reason);
    expect(count).toBe(0);
    const plain = await locks.acquire('r', { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect((plain as DOMException).name).toBe('AbortError');
  });

  it('aborting while waiting rejects with the reason and leaves the holder’s lock untouched', async () => {
    const keys = newKeys();
    const locks = createLocks({ redis, keys });
    const held = await locks.acquire('r');
    if (!held) throw new Error('not acquired');
    const ctrl = new AbortController();
    const reason = new Error('client went away');
    const waiting = locks.acquire('r', { waitMs: 60_000, retry: { minDelayMs: 10, maxDelayMs: 20 }, signal: ctrl.signal });
    setTimeout(() => ctrl.abort(reason), 100);
    await expect(waiting).rejects.toBe(reason);
    expect(await redis.get(keys.slotted('lock', 'r'))).toBe(`${held.fence}:${held.token}`);
    // The cancelled waiter minted no fence: only the holder's acquire incremented it.
    expect(await redis.get(keys.slotted('lock', 'r', 'fence'))).toBe(1);
    await held.release();
  });

  it('a semaphore wait can be aborted too', async () => {
    const locks = createLocks({ redis, keys: newKeys() });
    const sem = locks.semaphore('s', { limit: 1 });
    const p = await sem.acquire();
    expect(p).not.toBeNull();
    const ctrl = new AbortController();
    const waiting = sem.acquire({ waitMs: 60_000, retry: { minDelayMs: 10, maxDelayMs: 20 }, signal: ctrl.signal });
    setTimeout(() => ctrl.abort(), 100);
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
    await p?.release();
  });

  it('bad lease values are programming errors, thrown before any I/O', async () => {
    const locks = createLocks({ redis, keys: newKeys() });
    const { result, count } = await countTrips(url, async () => Promise.all([
      locks.acquire('r', { leaseMs: 0 }).catch((e: unknown) => e),
      locks.acquire('r', { leaseMs: 1.5 }).catch((e: unknown) => e),
    ]));
    expect(result.every((e) => e instanceof RangeError)).toBe(true);
    expect(count).toBe(0);
    expect(() => locks.semaphore('s', { limit: 0 })).toThrow(RangeError);
  });
});

describe('scripts missing from the Redis script cache', () => {
  it('falls back from EVALSHA to EVAL on NOSCRIPT (two round trips), then works', async () => {
    const keys = newKeys();
    // A real client, but EVALSHA is sent for a SHA Redis has never seen, so Redis answers NOSCRIPT.
    const cold: LockRedis = {
      evalsha: (sha, k, a) => redis.evalsha(sha.replace(/^.{8}/, '00000000'), k, a),
      eval: (src, k, a) => redis.eval(src, k, a),
    };
    const locks = createLocks({ redis: cold, keys });
    const { result: lock, count, commands } = await countTrips(url, () => locks.acquire('r'));
    expect(commands).toEqual(['evalsha', 'eval']);
    expect(count).toBe(2);
    expect(lock?.fence).toBe(1);
    expect(await redis.get(keys.slotted('lock', 'r'))).toBe(`1:${lock?.token}`);
    expect(await lock?.release()).toBe(true);
    expect(SCRIPTS.acquire.sha).toMatch(/^[0-9a-f]{40}$/);
  });
});

describe('failure policy: fail closed', () => {
  it('acquire rejects with a LockError unavailable (503 through edge-redis/hono, with cause) when Redis is down: never "acquired"', async () => {
    const locks = createLocks({ redis: down(), keys: newKeys() });
    const err = await locks.acquire('r', { waitMs: 1_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockError);
    expect(err).toBeInstanceOf(EdgeRedisError);
    const e = err as LockError;
    expect(e.code).toBe('unavailable');
    expect(PROBLEMS[edgeRedisProblem(e).code].status).toBe(503);
    expect(e.cause).toBeInstanceOf(Error);
    // The client-facing text says nothing about Redis internals.
    expect(e.message).not.toMatch(/redis|ECONN|503/i);
  });

  it('a network failure (nothing listening, after the client’s own retries) is a LockError unavailable too', async () => {
    const unreachable = new Redis({ url: inject('closedUrl'), token: 'x', retry: { retries: 1, backoff: () => 10 } });
    const locks = createLocks({ redis: unreachable, keys: newKeys() });
    const err = await locks.acquire('r').catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'LockError', code: 'unavailable' });
    expect((err as LockError).cause).toBeInstanceOf(Error);
  });

  it('withLock, inspect and the semaphore fail closed too; fn never runs', async () => {
    const locks = createLocks({ redis: down(), keys: newKeys() });
    let called = false;
    await expect(locks.withLock('r', async () => { called = true; })).rejects.toMatchObject({ name: 'LockError', code: 'unavailable' });
    expect(called).toBe(false);
    await expect(locks.inspect('r')).rejects.toMatchObject({ name: 'LockError', code: 'unavailable' });
    await expect(locks.semaphore('s', { limit: 3 }).acquire()).rejects.toMatchObject({ name: 'LockError', code: 'unavailable' });
  });

  it('release and extend reject (not false) when Redis is unreachable, and a failed release can be retried', async () => {
    const keys = newKeys();
    let target: Redis = redis;
    const switchable: LockRedis = {
      evalsha: (sha, k, a) => target.evalsha(sha, k, a),
      eval: (src, k, a) => target.eval(src, k, a),
    };
    const locks = createLocks({ redis: switchable, keys });
    const lock = await locks.acquire('r');
    if (!lock) throw new Error('not acquired');
    target = down();
    await expect(lock.extend(5_000)).rejects.toMatchObject({ name: 'LockError', code: 'unavailable' });
    await expect(lock.release()).rejects.toMatchObject({ name: 'LockError', code: 'unavailable' });
    target = redis;
    expect(await lock.release()).toBe(true);
    expect(await redis.exists(keys.slotted('lock', 'r'))).toBe(0);
  });

  it('withLock aborts fn with a LockError lost (cause: a LockError unavailable) when Redis goes away mid-run', async () => {
    const keys = newKeys();
    let target: Redis = redis;
    const switchable: LockRedis = {
      evalsha: (sha, k, a) => target.evalsha(sha, k, a),
      eval: (src, k, a) => target.eval(src, k, a),
    };
    const locks = createLocks({ redis: switchable, keys });
    let reason: unknown;
    await expect(locks.withLock('r', async (signal) => {
      target = down();
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      reason = signal.reason;
      throw signal.reason;
    }, { leaseMs: 300 })).rejects.toMatchObject({ name: 'LockError', code: 'lost' });
    expect((reason as LockError).cause).toMatchObject({ name: 'LockError', code: 'unavailable' });
    // The lease frees the lock by itself: nothing was left without a TTL.
    const pttl = await redis.pttl(keys.slotted('lock', 'r'));
    expect(pttl).toBeLessThanOrEqual(300);
  });
});
