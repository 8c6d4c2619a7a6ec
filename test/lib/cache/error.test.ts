import { env } from 'cloudflare:workers';
import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test';
import { Redis } from '@upstash/redis/cloudflare';
import { afterEach, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { CacheError, createCache, SCRIPTS, type CacheRedis } from 'edge-redis/cache';
import { keySchema } from 'edge-redis/keys';
import { countTrips } from '../../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup(client: CacheRedis = redis, timeoutMs?: number) {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const onError = vi.fn<(e: CacheError) => void>();
  const cache = createCache({ redis: client, keys, onError, ...(timeoutMs ? { defaults: { timeoutMs } } : {}) });
  return { keys, cache, onError };
}

beforeAll(async () => {
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

afterEach(() => {
  vi.restoreAllMocks();
});

describe('failure policy: fail open', () => {
  it('Redis stopped (the gateway answers 503): getOrLoad serves the loader value and reports, never throws', async () => {
    const down = new Redis({ url: inject('downGatewayUrl'), token });
    const { cache, onError } = setup(down);
    const loader = vi.fn(async () => ({ id: 1 }));
    const r = await cache.getOrLoad('product:1', loader, { tags: ['products'] });
    expect(r).toMatchObject({ value: { id: 1 }, status: 'miss', reason: 'error' });
    expect(loader).toHaveBeenCalledTimes(1);
    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError.mock.calls[0]?.[0]).toMatchObject({ name: 'CacheError', code: 'unavailable', op: 'read', key: 'product:1' });

    expect(await cache.getMany(['a', 'b'])).toMatchObject([
      { key: 'a', status: 'miss', reason: 'error' },
      { key: 'b', status: 'miss', reason: 'error' },
    ]);
    // Writes the caller asked for reject: a lost invalidation must be visible.
    await expect(cache.invalidate('product:1')).rejects.toMatchObject({ name: 'CacheError', code: 'unavailable', op: 'invalidate' });
    await expect(cache.invalidateTag('products')).rejects.toBeInstanceOf(CacheError);
    await expect(cache.set('product:1', 1)).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('Redis slow (gateway +400 ms) past timeoutMs: the loader value is served and a timeout reported', async () => {
    const slow = new Redis({ url: inject('slowGatewayUrl'), token });
    const { cache, onError } = setup(slow, 100);
    const r = await cache.getOrLoad('k', async () => 'origin');
    expect(r).toMatchObject({ value: 'origin', status: 'miss', reason: 'error' });
    expect(onError.mock.calls.map(([e]) => [e.code, e.op])).toEqual([['timeout', 'read']]);
    await expect(cache.invalidate('k')).rejects.toMatchObject({ code: 'timeout', op: 'invalidate' });
  });

  it('nothing listening (network errors, the client retrying): still the loader value within the budget', async () => {
    const closed = new Redis({ url: inject('closedUrl'), token });
    const { cache, onError } = setup(closed, 200);
    expect(await cache.getOrLoad('k', async () => 'origin')).toMatchObject({ value: 'origin', reason: 'error' });
    expect(onError).toHaveBeenCalledTimes(1);
  });

  it('the default onError warns without the key, the value, the command or the token', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
    const cache = createCache({ redis: new Redis({ url: inject('downGatewayUrl'), token }), keys });
    await cache.getOrLoad('user:alice@example.com', async () => 'secret-value');
    expect(warn).toHaveBeenCalledTimes(1);
    const printed = warn.mock.calls.flat().join(' ');
    expect(printed).toContain('cache read: unavailable');
    for (const leak of ['alice', 'secret-value', token, 'evalsha', 'command was']) expect(printed).not.toContain(leak);
  });

  it('a throwing onError does not break the fail-open path', async () => {
    const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
    const cache = createCache({
      redis: new Redis({ url: inject('downGatewayUrl'), token }),
      keys,
      onError: () => {
        throw new Error('reporter down');
      },
    });
    expect(await cache.getOrLoad('k', async () => 1)).toMatchObject({ value: 1, reason: 'error' });
  });

  it('a bad option is a programmer error, thrown at once', async () => {
    const { cache } = setup();
    await expect(cache.getOrLoad('k', async () => 1, { ttl: -5 })).rejects.toThrow(RangeError);
  });
});

describe('loader failures', () => {
  it('a loader that throws on a miss rejects getOrLoad with its error and frees the lock for the others', async () => {
    const { cache, keys } = setup();
    const boom = new Error('origin down');
    await expect(cache.getOrLoad('k', async () => Promise.reject(boom))).rejects.toBe(boom);
    expect(await redis.exists(keys.slotted('cache', 'k', 'lock'))).toBe(0);
    // The next caller takes the lock at once (it does not wait out the lease).
    expect(await cache.getOrLoad('k', async () => 'ok', { waitMs: 0 })).toMatchObject({ value: 'ok', status: 'miss', reason: 'absent' });
  });

  it('a failed stale refresh keeps serving the stale value (grace), reports, and frees the lock', async () => {
    const { cache, keys, onError } = setup();
    await cache.set('k', 'old', { ttl: 1, staleTtl: 60_000, jitter: 0 });
    await sleep(10);
    const ctx = createExecutionContext();
    const r = await cache.getOrLoad('k', async () => Promise.reject(new Error('origin down')), { ctx });
    await waitOnExecutionContext(ctx);
    expect(r).toMatchObject({ value: 'old', status: 'stale' });
    expect(onError.mock.calls.map(([e]) => [e.code, e.op])).toEqual([['loader', 'refresh']]);
    expect(await redis.exists(keys.slotted('cache', 'k', 'lock'))).toBe(0);
    expect(await cache.get('k')).toMatchObject({ value: 'old', status: 'stale' });
  });

  it('the write after a load failing is reported, and the loaded value still served', async () => {
    const onError = vi.fn<(e: CacheError) => void>();
    // A real client with one method overridden: the write script fails, the read does not.
    const flaky = new Proxy(redis, {
      get(target, prop, receiver) {
        if (prop !== 'evalsha') return Reflect.get(target, prop, receiver);
        return (sha: string, k: string[], a: unknown[]) =>
          sha === SCRIPTS.write.sha ? Promise.reject(new Error('write refused')) : target.evalsha(sha, k, a);
      },
    });
    const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
    const c2 = createCache({ redis: flaky, keys, onError });
    expect(await c2.getOrLoad('k', async () => 'v')).toMatchObject({ value: 'v', status: 'miss' });
    expect(onError.mock.calls.map(([e]) => [e.code, e.op])).toEqual([['unavailable', 'write']]);
  });
});

describe('NOSCRIPT', () => {
  it('falls back from EVALSHA to EVAL (one extra round trip per script)', async () => {
    // A real client whose evalsha answers NOSCRIPT, as after a SCRIPT FLUSH (flushing for real would
    // disturb the exact counts of test files running in parallel).
    const noscript = new Proxy(redis, {
      get(target, prop, receiver) {
        if (prop !== 'evalsha') return Reflect.get(target, prop, receiver);
        return () => Promise.reject(new Error('NOSCRIPT No matching script. Please use EVAL.'));
      },
    });
    const { cache } = setup(noscript);
    const { result, trips } = await countTrips(url, () => cache.getOrLoad('k', async () => 'v'));
    expect(result).toMatchObject({ value: 'v', status: 'miss' });
    expect(trips.map((t) => t.commands)).toEqual([['eval'], ['eval']]);
    expect(await cache.get('k')).toMatchObject({ value: 'v', status: 'hit' });
  });
});
