/**
 * src/lib/multilock.ts over src/lib/lock.ts, real Redis through the gateway: all locks in one round
 * trip when free, ordered acquisition under contention (no deadlock), all-or-nothing.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { keySchema } from 'edge-redis/keys';
import { acquireAll, createLocks, releaseAll, SCRIPTS } from 'edge-redis/lock';
import { createRedis } from 'edge-redis/redis';
import { countTrips } from '../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup() {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  // The app's client: every command of one task leaves in one HTTP request.
  const batched = createRedis({ UPSTASH_REDIS_REST_URL: url, UPSTASH_REDIS_REST_TOKEN: token }, { batch: 'task' });
  return { keys, locks: createLocks({ redis: batched, keys }) };
}

beforeAll(async () => {
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

describe('acquireAll', () => {
  it('takes every free lock in ONE round trip (sorted, duplicates once) and releases them in one', async () => {
    const { locks } = setup();
    const got = await countTrips(url, () => acquireAll(locks, ['product:9', 'product:10', 'product:3', 'product:9']));
    expect(got.count).toBe(1);
    expect(got.commands).toEqual(['evalsha', 'evalsha', 'evalsha']);
    const held = got.result;
    if (!held) throw new Error('not acquired');
    expect(held.map((l) => l.resource)).toEqual(['product:10', 'product:3', 'product:9']);
    const rel = await countTrips(url, () => releaseAll(held));
    expect(rel.count).toBe(1);
    expect((await locks.inspect('product:3')).held).toBe(false);
  });

  it('waits for a busy lock, then holds them all', async () => {
    const { locks } = setup();
    const blocker = await locks.acquire('b', { leaseMs: 200 });
    if (!blocker) throw new Error('setup');
    const held = await acquireAll(locks, ['a', 'b', 'c'], { waitMs: 3_000, retry: { minDelayMs: 10, maxDelayMs: 50 } });
    expect(held?.map((l) => l.resource)).toEqual(['a', 'b', 'c']);
    for (const r of ['a', 'b', 'c']) expect((await locks.inspect(r)).held).toBe(true);
    await releaseAll(held ?? []);
  });

  it('all or nothing: null when one stays busy past waitMs, and nothing else is left held', async () => {
    const { locks } = setup();
    const blocker = await locks.acquire('b', { leaseMs: 10_000 });
    if (!blocker) throw new Error('setup');
    expect(await acquireAll(locks, ['a', 'b', 'c'], { waitMs: 100 })).toBeNull();
    expect((await locks.inspect('a')).held).toBe(false);
    expect((await locks.inspect('c')).held).toBe(false);
    await blocker.release();
  });

  it('two callers wanting overlapping sets in opposite orders both finish (no deadlock)', async () => {
    const { locks } = setup();
    const run = async (resources: string[]) => {
      for (let i = 0; i < 5; i++) {
        const held = await acquireAll(locks, resources, { leaseMs: 5_000, waitMs: 5_000, retry: { minDelayMs: 5, maxDelayMs: 20 } });
        if (!held) return false;
        await sleep(5);
        await releaseAll(held);
      }
      return true;
    };
    expect(await Promise.all([run(['x', 'y', 'z']), run(['z', 'y', 'x']), run(['y', 'x'])])).toEqual([true, true, true]);
  });

  it('an abort while waiting rejects with the reason and leaves nothing held', async () => {
    const { locks } = setup();
    const blocker = await locks.acquire('b', { leaseMs: 10_000 });
    if (!blocker) throw new Error('setup');
    const ctrl = new AbortController();
    const pending = acquireAll(locks, ['a', 'b'], { waitMs: 5_000, signal: ctrl.signal });
    await sleep(30);
    ctrl.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
    expect((await locks.inspect('a')).held).toBe(false);
    await blocker.release();
  });

  it('fails closed: Redis stopped → a LockError unavailable', async () => {
    const down = createLocks({ redis: new Redis({ url: inject('downGatewayUrl'), token }), keys: keySchema() });
    await expect(acquireAll(down, ['a', 'b'])).rejects.toMatchObject({ name: 'LockError', code: 'unavailable' });
  });
});
