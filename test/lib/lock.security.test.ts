import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { describe, expect, it } from 'vitest';
import { keySchema } from 'edge-redis/keys';
import { createLocks, SCRIPTS } from 'edge-redis/lock';

const redis = new Redis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });

function setup() {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  return { keys, locks: createLocks({ redis, keys }) };
}

describe('a non-owner changes nothing', () => {
  it('release and extend with a wrong token, a wrong fence or the public holder hash are refused', async () => {
    const { keys, locks } = setup();
    const lock = await locks.acquire('r', { leaseMs: 20_000 });
    if (!lock) throw new Error('not acquired');
    const key = keys.slotted('lock', 'r');
    const value = `${lock.fence}:${lock.token}`;
    const forged = [
      `${lock.fence}:${'0'.repeat(32)}`, // right fence, wrong token
      `${lock.fence + 1}:${lock.token}`, // right token, wrong fence
      `${lock.fence}:${lock.holder}`, // what inspect() shows is not a credential
      lock.token, // the token alone
    ];
    for (const v of forged) {
      // The scripts exactly as a second handle would run them.
      expect(await redis.evalsha(SCRIPTS.extend.sha, [key], [v, 1_000]), v).toBe(0);
      expect(await redis.evalsha(SCRIPTS.release.sha, [key], [v]), v).toBe(0);
    }
    expect(await redis.get(key)).toBe(value);
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(19_000);
    expect(pttl).toBeLessThanOrEqual(20_000);
    expect(await lock.release()).toBe(true);
  });

  it('a holder whose lease lapsed cannot release or extend the next holder’s lock', async () => {
    const { keys, locks } = setup();
    const key = keys.slotted('lock', 'r');
    const stale = await locks.acquire('r', { leaseMs: 50 });
    if (!stale) throw new Error('not acquired');
    const current = await locks.acquire('r', { leaseMs: 20_000, waitMs: 10_000, retry: { minDelayMs: 10, maxDelayMs: 30 } });
    if (!current) throw new Error('second holder did not acquire after the lapse');
    expect(current.fence).toBeGreaterThan(stale.fence);

    expect(await stale.extend(60_000)).toBe(false);
    expect(await stale.release()).toBe(false);
    expect(await stale[Symbol.asyncDispose]()).toBeUndefined();

    expect(await redis.get(key)).toBe(`${current.fence}:${current.token}`);
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(19_000);
    expect(pttl).toBeLessThanOrEqual(20_000);
    expect(await locks.inspect('r')).toMatchObject({ held: true, fence: current.fence, holder: current.holder });
    expect(await current.release()).toBe(true);
  });

  it('a semaphore permit cannot be released or extended with another token', async () => {
    const { keys, locks } = setup();
    const key = keys.slotted('sem', 's');
    const p = await locks.semaphore('s', { limit: 2, leaseMs: 20_000 }).acquire();
    if (!p) throw new Error('no permit');
    for (const ms of [0, 60_000]) {
      expect(await redis.evalsha(SCRIPTS.semUpdate.sha, [key], ['f'.repeat(32), ms])).toBe(0);
    }
    expect(await redis.zrange(key, 0, -1)).toEqual([p.token]);
    expect(await redis.zcard(key)).toBe(1);
    const pttl = await redis.pttl(key);
    expect(pttl).toBeGreaterThan(19_000);
    expect(pttl).toBeLessThanOrEqual(20_000);
    await p.release();
  });

  it('tokens are 128 random bits and never repeat', async () => {
    const { locks } = setup();
    const tokens = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const l = await locks.acquire(`r${i}`);
      if (!l) throw new Error('not acquired');
      expect(l.token).toMatch(/^[0-9a-f]{32}$/);
      tokens.add(l.token);
      await l.release();
    }
    expect(tokens.size).toBe(20);
  });

  it('resource names cannot escape their hash tag or collide with another resource', async () => {
    const { keys, locks } = setup();
    const a = await locks.acquire('x}y');
    const b = await locks.acquire('x');
    expect(a?.fence).toBe(1);
    expect(b?.fence).toBe(1);
    expect(keys.slotted('lock', 'x}y')).not.toBe(keys.slotted('lock', 'x'));
    await Promise.all([a?.release(), b?.release()]);
  });
});
