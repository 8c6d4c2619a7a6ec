import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { createCache, SCRIPTS, type CacheError, type Validator } from 'edge-redis/cache';
import { keySchema } from 'edge-redis/keys';
import { countTrips } from '../../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });

interface Product { id: number; price: number }
const isProduct = (v: unknown): v is Product =>
  typeof v === 'object' && v !== null && typeof (v as Product).id === 'number' && typeof (v as Product).price === 'number' && (v as Product).price >= 0;

/** The three validator shapes: a type guard, a zod-like `{ parse }`, and a hand-written Standard Schema. */
const validators: [string, Validator<Product>][] = [
  ['type guard', isProduct],
  ['{ parse }', { parse: (v) => { if (!isProduct(v)) throw new TypeError('not a product'); return v; } }],
  ['Standard Schema', { '~standard': { validate: async (v) => (isProduct(v) ? { value: v } : { issues: [{ message: 'not a product' }] }) } }],
];

function setup() {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const onError = vi.fn<(e: CacheError) => void>();
  return { cache: createCache({ redis, keys, onError }), onError, entry: (k: string) => keys.slotted('cache', k) };
}

beforeAll(async () => {
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

describe.each(validators)('values are checked on read (%s)', (_, validate) => {
  it('garbage written by a raw client is a reported miss: the loader runs and the entry is rewritten', async () => {
    const { cache, onError, entry } = setup();
    await redis.set(entry('p:1'), 'not json {');
    const loader = vi.fn(async () => ({ id: 1, price: 10 }));
    const { result, count } = await countTrips(url, () => cache.getOrLoad('p:1', loader, { validate }));
    expect(result).toMatchObject({ value: { id: 1, price: 10 }, status: 'miss', reason: 'invalid' });
    expect(count).toBe(2); // not an envelope: the read script saw no freshness and took the lock at once
    expect(onError.mock.calls.map(([e]) => [e.code, e.key])).toEqual([['invalid', 'p:1']]);
    expect(await redis.get(entry('p:1'))).toMatchObject({ v: { id: 1, price: 10 } });
  });

  it('a well-formed envelope with a tampered value is a miss, never served', async () => {
    const { cache, onError, entry } = setup();
    await cache.set('p:2', { id: 2, price: 10 });
    const stored = await redis.get<Record<string, unknown>>(entry('p:2'));
    await redis.set(entry('p:2'), JSON.stringify({ ...stored, v: { id: 2, price: -1 } }), { px: 60_000 });
    const { result, count } = await countTrips(url, () => cache.getOrLoad('p:2', async () => ({ id: 2, price: 10 }), { validate }));
    expect(result).toMatchObject({ value: { id: 2, price: 10 }, status: 'miss', reason: 'invalid' });
    expect(count).toBe(3); // fresh by time: a second read names the bad entry to take the lock
    expect(onError).toHaveBeenCalledTimes(1);
  });
});

describe('tampering', () => {
  it('the negative-entry flag cannot smuggle a value past the check', async () => {
    const { cache, entry } = setup();
    await cache.set('p:3', { id: 3, price: 1 });
    const stored = await redis.get<Record<string, unknown>>(entry('p:3'));
    await redis.set(entry('p:3'), JSON.stringify({ ...stored, v: { id: 3, price: -5 }, n: 1 }), { px: 60_000 });
    expect(await cache.get('p:3', { validate: isProduct })).toMatchObject({ status: 'miss', reason: 'invalid' });
  });

  it('getMany checks every value and reports each bad one', async () => {
    const { cache, onError, entry } = setup();
    await cache.set('good', { id: 1, price: 1 });
    await redis.set(entry('bad'), JSON.stringify({ c: 1, f: 9e15, s: 9e15, v: 'x', t: {} }));
    const rs = await cache.getMany<Product>(['good', 'bad'], { validate: isProduct });
    expect(rs.map((r) => [r.key, r.status, r.reason])).toEqual([['good', 'hit', 'fresh'], ['bad', 'miss', 'invalid']]);
    expect(onError).toHaveBeenCalledTimes(1);
  });

  it('a hostile cache key cannot escape its hash slot or widen a pattern', async () => {
    const { cache, entry } = setup();
    await cache.set('a}{b', 1);
    await cache.set('user:1:x', 1);
    expect(await redis.exists(entry('a}{b'))).toBe(1);
    expect(entry('a}{b')).toMatch(/:cache:\{a%7D%7Bb\}$/);
    // A '}' in the pattern is escaped like the keys, so it cannot close the tag and match lock keys.
    expect(await cache.invalidatePattern('user:1:x}*', { maxIterations: 10_000, count: 1_000 })).toMatchObject({ deleted: 0 });
    expect(await cache.get('user:1:x')).toMatchObject({ status: 'hit' });
  });
});
