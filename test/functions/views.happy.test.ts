/**
 * Page views, write-behind: each served `GET /products/:id` is counted in Redis (stream + tally),
 * the cron (`scheduled()` of the Worker's default export) flushes them to D1 in batches, and
 * `GET /products/:id/views` is D1 plus what is not flushed yet, exact at every step.
 */
import { Redis } from '@upstash/redis/cloudflare';
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { applyViews, readViews, VIEW_DRAIN, viewQueue } from '../../src/functions/views.ts';
import { countTrips } from '../support/round-trips.ts';
import { call, createProduct, fileEnv, freshIp, prefixOf, runCron } from './products.support.ts';

const e = fileEnv();
const stream = `${prefixOf(e)}:wb:{views}`;
const url = env.UPSTASH_REDIS_REST_URL;
const redis = new Redis({ url, token: env.UPSTASH_REDIS_REST_TOKEN });

const views = async (id: number) => {
  const r = await call(`/products/${id}/views`, { env: e });
  expect(r.status, r.text).toBe(200);
  expect(r.res.headers.get('cache-control')).toBe('no-store');
  return (r.body as { views: number }).views;
};
const flushed = async (id: number) => (await env.DB.prepare('SELECT views FROM product_views WHERE product_id = ?').bind(id).first<number>('views')) ?? 0;
const pending = async (id: number) => Number((await redis.hget(`${stream}:tally`, String(id))) ?? 0);

describe('counting and flushing', () => {
  it('each GET counts (200 and 304 alike); the cron moves the count to D1; the total never changes on the way', async () => {
    const p = await createProduct(e);
    expect(await views(p.id)).toBe(0);
    const first = await call(`/products/${p.id}`, { env: e });
    await call(`/products/${p.id}`, { env: e });
    await call(`/products/${p.id}`, { env: e, headers: { 'if-none-match': first.res.headers.get('etag')! } });
    expect(await pending(p.id)).toBe(3);
    expect(await flushed(p.id)).toBe(0);
    expect(await views(p.id)).toBe(3);

    await runCron(e);
    expect(await flushed(p.id)).toBe(3);
    expect(await pending(p.id)).toBe(0);
    expect(await views(p.id)).toBe(3);

    await call(`/products/${p.id}`, { env: e });
    await call(`/products/${p.id}`, { env: e });
    expect(await views(p.id)).toBe(5);
    await runCron(e);
    expect(await flushed(p.id)).toBe(5);
    expect(await views(p.id)).toBe(5);
    expect(await redis.xpending(stream, VIEW_DRAIN.group, '-', '+', 10)).toEqual([]);
  });

  it('a 404 is not a view: unknown ids never create a counter', async () => {
    const r = await call('/products/876543210', { env: e });
    expect(r.status).toBe(404);
    expect(await redis.hexists(`${stream}:tally`, '876543210')).toBe(0);
  });

  it('the cron flushes in batches of VIEW_DRAIN_BATCH_SIZE (here 100): 250 views are 3 batches and 4 round trips, applied exactly', async () => {
    const [a, b] = [await createProduct(e), await createProduct(e)];
    const q = viewQueue(e);
    await Promise.all(Array.from({ length: 250 }, (_, i) => q.enqueue({ p: i % 5 === 0 ? b.id : a.id }, { tally: String(i % 5 === 0 ? b.id : a.id) })));
    expect((await views(a.id)) + (await views(b.id))).toBe(250);
    // The same app and keys, with the batch size set by its var.
    const { trips } = await countTrips(url, () => runCron({ ...e, VIEW_DRAIN_BATCH_SIZE: '100' }));
    // claim | ack + claim | ack + claim | ack: one script each.
    expect(trips.map((t) => t.commands)).toEqual([['evalsha'], ['evalsha', 'evalsha'], ['evalsha', 'evalsha'], ['evalsha']]);
    expect(await flushed(a.id)).toBe(200);
    expect(await flushed(b.id)).toBe(50);
    expect(await views(a.id)).toBe(200);
    expect(await views(b.id)).toBe(50);

    const idle = await countTrips(url, () => runCron(e));
    expect(idle.count).toBe(1);
  });

  it('the count is exact between the D1 commit and the ack, and for a reader whose snapshot came before the claim', async () => {
    const p = await createProduct(e);
    for (let i = 0; i < 4; i++) await call(`/products/${p.id}`, { env: e });
    const seen: number[] = [];
    await viewQueue(e).drain({
      ...VIEW_DRAIN,
      handler: async (batch) => {
        seen.push((await readViews(e, p.id))!);
        await applyViews(e.DB, batch);
        seen.push((await readViews(e, p.id))!); // in D1 and still pending in Redis
      },
    });
    expect(seen).toEqual([4, 4]);
    expect(await flushed(p.id)).toBe(4);
    expect(await views(p.id)).toBe(4);
  });
});

describe('round trips', () => {
  it('GET /products/:id/views: 1 Redis round trip (the limit check and the snapshot together), then D1', async () => {
    const p = await createProduct(e);
    await call(`/products/${p.id}/views`, { env: e });
    const ip = freshIp();
    const { trips, result } = await countTrips(url, () => call(`/products/${p.id}/views`, { env: e, ip }));
    expect(result.status).toBe(200);
    expect(trips.map((t) => t.commands)).toEqual([['evalsha', 'evalsha_ro']]);
  });
});
