/**
 * Views cannot be inflated past the guards: a request the rate limit refuses (the handler ran
 * beside the check, in the limiter's concurrent mode) counts no view, and ids that are not
 * products never get a counter (no unbounded keys from guessed ids).
 */
import { Redis } from '@upstash/redis/cloudflare';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { call, createProduct, fileEnv, freshIp, prefixOf } from './products.support.ts';

const redis = new Redis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN });

describe('view counting', () => {
  it('a request refused by the rate limit (429) is not a view', async () => {
    const strict = fileEnv({ API_RATE_LIMIT: '2' });
    const p = await createProduct(strict);
    const ip = freshIp();
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await call(`/products/${p.id}`, { env: strict, ip })).status);
    expect(statuses).toEqual([200, 200, 429, 429]);
    const r = await call(`/products/${p.id}/views`, { env: strict });
    expect(r.body).toEqual({ views: 2 });
  });

  it('guessed ids leave no trace in Redis beyond the brief absent-entry cache', async () => {
    const e = fileEnv();
    const ip = freshIp();
    for (const id of [999_999_991, 999_999_992, 999_999_993]) expect((await call(`/products/${id}`, { env: e, ip })).status).toBe(404);
    const stream = `${prefixOf(e)}:wb:{views}`;
    expect(await redis.exists(stream, `${stream}:tally`)).toBe(0);
    const absent = await redis.pttl(`${prefixOf(e)}:cache:{product:999999991}`);
    expect(absent).toBeGreaterThan(0);
    expect(absent).toBeLessThanOrEqual(30_000);
  });
});
