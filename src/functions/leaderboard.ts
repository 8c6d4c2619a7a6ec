/**
 * `GET /leaderboard/best-sellers?limit=10`: products by units sold, from the sorted set that
 * `POST /checkout` increments (edge-redis/leaderboard, built in src/services.ts).
 *
 * Round trips: 1, and it is the request's only one: the ZRANGE leaves in the same HTTP request as
 * the default per-IP check (a GET runs alongside its check). Not cached in Redis: a cached copy would
 * cost the same one command. Browsers and CDNs may keep it {@link MAX_AGE_S} s (`Cache-Control`).
 * A Redis failure answers 503 problem+json. Every listed id is a real product: products that were
 * ever ordered cannot be deleted (order_items refer to them; DELETE /products/:id answers 409).
 */
import { Hono } from 'hono';
import { z } from 'zod';
import type { AppEnv } from '../env.ts';
import type { Leaderboard } from 'edge-redis/leaderboard';
import { services } from '../services.ts';
import { doc, validate } from './openapi.ts';

/** Seconds a best-sellers answer may be reused by browsers and shared caches. */
export const MAX_AGE_S = 5;

/** The best-sellers leaderboard of this env: product id → units sold. */
export const bestSellers = (env: Env): Leaderboard => services(env).bestSellers;

const Query = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(10).describe('How many products, 1..100'),
});
const BestSellers = z.object({
  items: z.array(z.object({ productId: z.number().int(), sold: z.number().int() })),
});

const leaderboard = new Hono<AppEnv>();

leaderboard.get('/best-sellers', doc({
  tags: ['leaderboard'], summary: 'Best-selling products',
  description: 'Highest units sold first (ties in descending string order of the id, as Redis sorts members). Counts every order since the leaderboard began.',
  responses: { 200: { description: 'The top products', body: BestSellers } },
}), validate('query', Query), async (c) => {
  const { limit } = c.req.valid('query');
  const top = await c.var.services.bestSellers.top(limit);
  c.header('Cache-Control', `public, max-age=${MAX_AGE_S}`);
  return c.json({ items: top.map((e) => ({ productId: Number(e.member), sold: e.score })) });
});

export default leaderboard;
