/**
 * The fault lab itself (test/support/fault-lab.ts): the faults the other loss tests rely on happen
 * for real, and only on the private Redis of the file that asked for it.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { privateRedis, type PrivateRedis } from '../support/faults.ts';

let lab: PrivateRedis;
const shared = new Redis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });
const marker = `lab-marker:${crypto.randomUUID()}`;

beforeAll(async () => {
  lab = await privateRedis();
  await shared.set(marker, 'kept', { px: 60_000 });
});
afterAll(async () => {
  await shared.del(marker);
  await lab?.stop();
});

describe('the fault lab', () => {
  it('gives a private Redis: FLUSHALL there leaves the shared one alone', async () => {
    expect(lab.bindings.UPSTASH_REDIS_REST_URL).not.toBe(env.UPSTASH_REDIS_REST_URL);
    await lab.client.set('a', 1);
    await lab.flushall();
    expect(await lab.client.get('a')).toBeNull();
    expect(await shared.get(marker)).toBe('kept');
  });

  it('restarts the process empty: keys and loaded scripts are gone, the gateway answers again', async () => {
    await lab.client.set('a', 1);
    const sha = await lab.client.scriptLoad('return 1');
    await lab.restart();
    expect(await lab.client.get('a')).toBeNull();
    expect(await lab.client.scriptExists(sha)).toEqual([0]);
    expect(await lab.client.set('b', 2)).toBe('OK');
  });

  it('deletes named keys, a random share once, and repeatedly while a test runs', async () => {
    await lab.flushall();
    await Promise.all(Array.from({ length: 200 }, (_, i) => lab.client.set(`k:${i}`, i)));
    expect(await lab.del('k:0', 'k:1', 'nope')).toBe(2);
    const once = await lab.drop(0.5, 'k:*');
    expect(once.scanned).toBe(198);
    expect(once.deleted).toBeGreaterThan(40);
    expect(once.deleted).toBeLessThan(160);
    expect(await lab.keys('k:*')).toHaveLength(198 - once.deleted);

    const stop = await lab.chaos(1, 20, 'c:*');
    let gone = false;
    for (let i = 0; i < 40 && !gone; i++) {
      await lab.client.set('c:x', 1);
      await new Promise((r) => setTimeout(r, 50));
      gone = (await lab.client.exists('c:x')) === 0;
    }
    expect(gone).toBe(true);
    const report = await stop();
    expect(report.rounds).toBeGreaterThan(0);
    expect(report.deleted).toBeGreaterThan(0);
  });

  it('sets maxmemory with an eviction policy, and lifts it', async () => {
    await lab.flushall();
    await lab.maxmemory(2_000_000, 'allkeys-random');
    const big = 'x'.repeat(10_000);
    for (let i = 0; i < 400; i++) await lab.client.set(`big:${i}`, big);
    expect((await lab.keys('big:*')).length).toBeLessThan(400);
    await lab.maxmemory(0);
  });

  it('refuses requests without its token, and ids it did not hand out', async () => {
    const res = await fetch(`${inject('faultLabUrl')}/redis`, { method: 'POST' });
    expect(res.status).toBe(401);
    const other = await fetch(`${inject('faultLabUrl')}/redis/not-an-id/flushall`, { method: 'POST', headers: { authorization: `Bearer ${inject('faultLabToken')}` } });
    expect(other.status).toBe(404);
  });
});
