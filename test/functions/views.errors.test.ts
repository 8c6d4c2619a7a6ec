/**
 * The view flush when things fail: a crash between the D1 commit and the ack (nothing counted
 * twice, the count exact meanwhile), D1 or Redis down during the cron (it fails loudly, loses
 * nothing, and the next run catches up), and entries that can never be applied (a deleted product,
 * a malformed entry) that must not block the rest.
 */
import { Redis } from '@upstash/redis/cloudflare';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { applyViews, flushViews, readViews, VIEW_DRAIN, viewQueue } from '../../src/functions/views.ts';
import { createWriteBehind, SCRIPTS, type WriteBehindRedis } from 'edge-redis/writebehind';
import { services } from '../../src/services.ts';
import { ADMIN, call, createProduct, fileEnv, prefixOf, runCron } from './products.support.ts';

const e = fileEnv();
const stream = `${prefixOf(e)}:wb:{views}`;
const redis = new Redis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });

const flushed = async (id: number) => (await env.DB.prepare('SELECT views FROM product_views WHERE product_id = ?').bind(id).first<number>('views')) ?? 0;
const pendingIds = async () => (await redis.xpending(stream, VIEW_DRAIN.group, '-', '+', 1000)).length;

afterEach(() => {
  vi.restoreAllMocks();
});

async function viewed(id: number, times: number) {
  for (let i = 0; i < times; i++) expect((await call(`/products/${id}`, { env: e })).status).toBe(200);
}

describe('a crash between the D1 commit and the ack', () => {
  it('counts nothing twice: the count stays exact while unacked, and the redelivery changes nothing in D1', async () => {
    const p = await createProduct(e);
    await viewed(p.id, 3);
    // The views stream, drained through a real client whose ack never reaches Redis.
    const noAck: WriteBehindRedis = {
      evalsha: ((sha: string, keys: string[], args: unknown[]) =>
        sha === SCRIPTS.ack.sha ? Promise.reject(new Error('Network connection lost.')) : redis.evalsha(sha, keys, args)) as WriteBehindRedis['evalsha'],
      eval: redis.eval.bind(redis) as WriteBehindRedis['eval'],
      evalshaRo: redis.evalshaRo.bind(redis) as WriteBehindRedis['evalshaRo'],
      evalRo: redis.evalRo.bind(redis) as WriteBehindRedis['evalRo'],
    };
    const crashing = createWriteBehind({ redis: noAck, keys: services(e).keys, name: 'views' });
    expect(crashing.keys.stream).toBe(stream);
    await expect(crashing.drain({ ...VIEW_DRAIN, handler: (b) => applyViews(env.DB, b) })).rejects.toMatchObject({ code: 'unavailable' });
    expect(await flushed(p.id)).toBe(3); // committed in D1...
    expect(await redis.hget(`${stream}:tally`, String(p.id))).toBe(3); // ...and still pending in Redis
    expect(await readViews(e, p.id)).toBe(3);

    await viewed(p.id, 1);
    // The cron does not reclaim entries idle less than a minute; the count is exact all along.
    await runCron(e);
    expect(await flushed(p.id)).toBe(4);
    expect(await readViews(e, p.id)).toBe(4);
    expect(await pendingIds()).toBe(3);

    // Once idle (here: at once), the next run reclaims them; D1 already has them and adds nothing.
    const report = await flushViews(e, { claimIdleMs: 0 });
    expect(report).toMatchObject({ acked: 3, redelivered: 3 });
    expect(await flushed(p.id)).toBe(4);
    expect(await redis.hget(`${stream}:tally`, String(p.id))).toBeNull();
    expect(await readViews(e, p.id)).toBe(4);
    expect(await pendingIds()).toBe(0);
  });
});

describe('the cron when a dependency fails', () => {
  it('D1 down: scheduled() rejects and logs; nothing is lost and the next run catches up', async () => {
    const p = await createProduct(e);
    await viewed(p.id, 2);
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const fail = () => Promise.reject(new Error('D1_ERROR: Network connection lost.'));
    const statement = { bind: () => statement, first: fail, all: fail, run: fail };
    const noDb = { ...e, DB: { prepare: () => statement, batch: fail } as unknown as D1Database } as Env;
    await expect(runCron(noDb)).rejects.toMatchObject({ name: 'WriteBehindError', code: 'handler' });
    expect(error.mock.calls.flat().join(' ')).toMatch(/\[cron \* \* \* \* \*\] views flush failed/);
    expect(await flushed(p.id)).toBe(0);
    expect(await readViews(e, p.id)).toBe(2);
    await flushViews(e, { claimIdleMs: 0 });
    expect(await flushed(p.id)).toBe(2);
    expect(await readViews(e, p.id)).toBe(2);
  });

  it('Redis down: scheduled() rejects and logs without keys or tokens', async () => {
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const down = { ...e, UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') } as Env;
    await expect(runCron(down)).rejects.toMatchObject({ name: 'WriteBehindError', code: 'unavailable' });
    const logged = error.mock.calls.flat().join(' ');
    expect(logged).toContain('views flush failed');
    expect(logged).not.toContain(env.UPSTASH_REDIS_REST_TOKEN);
    expect(logged).not.toContain(stream);
  });
});

describe('entries that can never be applied', () => {
  it('views of a deleted product and malformed entries are dropped without blocking the others', async () => {
    const [gone, kept] = [await createProduct(e), await createProduct(e)];
    await viewed(gone.id, 2);
    await viewed(kept.id, 2);
    await viewQueue(e).enqueue({ p: 'not-a-number' });
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    expect((await call(`/products/${gone.id}`, { env: e, method: 'DELETE', headers: ADMIN })).status).toBe(204);
    await runCron(e);
    expect(warn.mock.calls.flat().join(' ')).toContain('malformed');
    expect(await flushed(kept.id)).toBe(2);
    expect(await flushed(gone.id)).toBe(0);
    expect(await readViews(e, gone.id)).toBeNull();
    expect(await pendingIds()).toBe(0);
  });
});
