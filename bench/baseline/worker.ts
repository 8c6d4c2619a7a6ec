/**
 * The benchmark's baseline: the product routes written the way the seed articles write them, so
 * `npm run bench:api` can show what our round-trip work buys. Do not copy this into an app.
 *
 * What makes it the seeds' way, on purpose:
 * - the rate limiter is the articles' sorted-set sliding window, one awaited command at a time:
 *   ZREMRANGEBYSCORE, ZCARD, ZADD, EXPIRE (four round trips before the handler starts);
 * - the cache is plain cache-aside: GET, then on a miss D1 and SETEX (one hour), with no single
 *   flight (every concurrent miss runs the query) and no stale-while-revalidate;
 * - `@upstash/redis` with auto-pipelining off, so each await is its own HTTP request.
 *
 * It reads the same D1 schema and seed as the app (migrations/) and answers the same JSON bodies
 * (not the same headers: no ETag, no Cache-Control), which the bench checks before it measures.
 */
import { Hono } from 'hono';
import { Redis } from '@upstash/redis/cloudflare';

/**
 * The part of D1's API this Worker uses. Structural on purpose: `npm run typecheck` checks bench/**
 * with gateway/tsconfig.json (Node's types), where workerd's `D1Database` does not exist, and the
 * generated runtime types (src/worker-configuration.d.ts) would drag the whole app into this check.
 */
interface D1Statement {
  bind(...values: unknown[]): D1Statement;
  first<T>(): Promise<T | null>;
  all<T>(): Promise<{ results: T[] }>;
}

/** Bindings from bench/baseline/wrangler.toml. */
export interface BaselineEnv {
  DB: { prepare(query: string): D1Statement };
  UPSTASH_REDIS_REST_URL: string;
  UPSTASH_REDIS_REST_TOKEN: string;
  API_RATE_LIMIT: string;
}

interface ProductRow {
  id: number;
  name: string;
  category: string;
  price_cents: number;
  stock: number;
}

/** What the API answers for a product (the app's shape: price in currency units). */
export interface Product {
  id: number;
  name: string;
  price: number;
  stock: number;
  category: string;
}

const PAGE_SIZE = 20;
const CACHE_TTL_SECONDS = 3600;
const WINDOW_SECONDS = 60;

const app = new Hono<{ Bindings: BaselineEnv }>();

// The articles create one client at start-up; a Worker's nearest equivalent is one per isolate.
let redis: Redis | undefined;
function client(env: BaselineEnv): Redis {
  redis ??= new Redis({
    url: env.UPSTASH_REDIS_REST_URL,
    token: env.UPSTASH_REDIS_REST_TOKEN,
    enableAutoPipelining: false,
    enableTelemetry: false,
  });
  return redis;
}

function toProduct(row: ProductRow): Product {
  return { id: row.id, name: row.name, price: row.price_cents / 100, stock: row.stock, category: row.category };
}

/** Seed 000's "sliding window rate limiter - the standard pattern", line for line. */
async function rateLimit(r: Redis, ip: string, max: number): Promise<{ allowed: boolean; remaining: number }> {
  const key = `ratelimit:${ip}`;
  const now = Date.now();
  const windowStart = now - WINDOW_SECONDS * 1000;
  await r.zremrangebyscore(key, 0, windowStart);
  const count = await r.zcard(key);
  if (count >= max) return { allowed: false, remaining: 0 };
  await r.zadd(key, { score: now, member: `${now}:${Math.random()}` });
  await r.expire(key, WINDOW_SECONDS);
  return { allowed: true, remaining: max - count - 1 };
}

app.get('/healthz', async (c) => c.json({ status: (await client(c.env).ping()) === 'PONG' ? 'ok' : 'degraded' }));

app.use(async (c, next) => {
  const result = await rateLimit(client(c.env), c.req.header('cf-connecting-ip') ?? 'unknown', Number(c.env.API_RATE_LIMIT));
  c.header('X-RateLimit-Remaining', String(result.remaining));
  if (!result.allowed) return c.json({ error: 'too many requests' }, 429);
  await next();
});

/** Seed 002's cache-aside `getUser`, for products: GET, else the database, then SETEX. */
async function cached<T>(r: Redis, key: string, load: () => Promise<T | null>): Promise<{ value: T | null; hit: boolean }> {
  const hit = await r.get<T>(key);
  if (hit !== null) return { value: hit, hit: true };
  const value = await load();
  if (value !== null) await r.setex(key, CACHE_TTL_SECONDS, value);
  return { value, hit: false };
}

app.get('/products/:id', async (c) => {
  const id = Number(c.req.param('id'));
  if (!Number.isInteger(id) || id < 1) return c.json({ error: 'bad id' }, 400);
  const { value, hit } = await cached(client(c.env), `product:${id}`, async () => {
    const row = await c.env.DB.prepare('SELECT id, name, category, price_cents, stock FROM products WHERE id = ?').bind(id).first<ProductRow>();
    return row ? toProduct(row) : null;
  });
  c.header('X-Cache', hit ? 'HIT' : 'MISS');
  return value ? c.json(value) : c.json({ error: 'not found' }, 404);
});

app.get('/products', async (c) => {
  const category = c.req.query('category') ?? '';
  const page = Number(c.req.query('page') ?? '1');
  if (!Number.isInteger(page) || page < 1) return c.json({ error: 'bad page' }, 400);
  const { value, hit } = await cached(client(c.env), `products:${category}:${page}`, async () => {
    const where = category ? 'WHERE category = ?' : '';
    const filter: unknown[] = category ? [category] : [];
    const { results } = await c.env.DB.prepare(`SELECT id, name, category, price_cents, stock FROM products ${where} ORDER BY id LIMIT ? OFFSET ?`)
      .bind(...filter, PAGE_SIZE, (page - 1) * PAGE_SIZE)
      .all<ProductRow>();
    const total = (await c.env.DB.prepare(`SELECT count(*) AS n FROM products ${where}`).bind(...filter).first<{ n: number }>())?.n ?? 0;
    return { items: results.map(toProduct), page, pageSize: PAGE_SIZE, total, totalPages: Math.ceil(total / PAGE_SIZE) };
  });
  c.header('X-Cache', hit ? 'HIT' : 'MISS');
  return c.json(value);
});

export default { fetch: app.fetch };
