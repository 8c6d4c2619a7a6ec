/**
 * Products: D1 is the source of truth, Redis (edge-redis/cache) is in front of it.
 *
 * - `GET /products` pages, cached per (category, page, pageSize) under the tag `products`, so one
 *   new version of the tag retires every page after a write.
 * - `GET /products/:id` cache-aside for 1 h with a 5 min stale-while-revalidate window and single
 *   flight (the cache does both); unknown ids are cached as "absent" for 30 s. The ETag (a SHA-256
 *   prefix of the product JSON) is computed when the product is loaded and stored with it, so a hit
 *   never hashes. `X-Cache: MISS` only on the response whose request ran the loader.
 * - HTTP caching: `Cache-Control: public, no-cache` + ETag. Browsers and a CDN in front may store a
 *   product but must revalidate each use (a 304 costs the same single Redis round trip and no body).
 *   Nothing outside Redis can be invalidated by our writes, so a max-age would show stale prices and
 *   stock after a PATCH, and it would hide views from the counter and requests from the rate limit.
 *   The stale-while-revalidate window lives in Redis, where invalidation reaches it.
 * - Each served `GET /products/:id` counts a view (./views.ts) in `waitUntil`, off the critical
 *   path: 1 round trip, the product's cache read and the rate limit check share the other.
 * - Writes (`POST`, `PATCH`, `DELETE`, `Authorization: Bearer <ADMIN_TOKEN>`, compared in constant
 *   time) go to D1, then ONE round trip invalidates the product's entry, bumps the `products` tag and
 *   publishes `product.created|updated|deleted` on `keys.key('events', 'products')`. If that round
 *   trip fails the write stands: 503 problem+json says so (never a 500).
 * - DELETE of a product that appears in an order answers 409 (order_items keep a real reference;
 *   set its stock to 0 to stop selling it). Its views go with it.
 */
import { Hono, type Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { z } from 'zod';
import type { AppEnv } from '../env.ts';
import type { CacheResult } from 'edge-redis/cache';
import { cacheHeaders } from 'edge-redis/hono';
import { fingerprint } from 'edge-redis/idempotency';
import { publishJson } from 'edge-redis/pubsub';
import { AppError } from '../errors.ts';
import { d1 } from './d1.ts';
import { doc, validate } from './openapi.ts';
import { countView, readViews } from './views.ts';

export const CATEGORIES = ['electronics', 'books', 'home', 'toys', 'sports', 'grocery'] as const;

/** What HTTP caches may do with product responses (see the file comment). */
export const PRODUCT_CACHE_CONTROL = 'public, no-cache';
/** Redis policy of one product: fresh 1 h, then served stale for 5 min while one refresh runs; absent ids for 30 s. */
export const PRODUCT_CACHE = { ttl: 3_600_000, staleTtl: 300_000, negativeTtl: 30_000 } as const;

const Category = z.enum(CATEGORIES);
const Product = z.object({ id: z.number().int(), name: z.string(), price: z.number(), stock: z.number().int(), category: Category });
type Product = z.infer<typeof Product>;
const Page = z.object({ items: z.array(Product), page: z.number().int(), pageSize: z.number().int(), total: z.number().int(), totalPages: z.number().int() });
type Page = z.infer<typeof Page>;

/** A whole number written the plain way (no sign, exponent, spaces or leading zeros), within bounds. */
const wholeNumber = (min: number, max: number) =>
  z.string().regex(/^(0|[1-9][0-9]{0,14})$/, 'must be a whole number').transform(Number).pipe(z.number().min(min).max(max));

const IdParam = z.object({ id: wholeNumber(1, Number.MAX_SAFE_INTEGER).describe('Product id, an integer from 1') });
const ListQuery = z.object({
  category: Category.optional(),
  page: wholeNumber(1, 100_000).default(1),
  pageSize: wholeNumber(1, 100).default(20),
});

const Price = z
  .number()
  .min(0)
  .max(10_000_000)
  .refine((p) => Math.abs(p * 100 - Math.round(p * 100)) < 1e-6, 'must have at most 2 decimals');
const ProductInput = z.strictObject({
  name: z.string().trim().min(1).max(200),
  category: Category,
  price: Price,
  stock: z.number().int().min(0).max(1_000_000_000),
});
const ProductPatch = ProductInput.partial().refine((o) => Object.keys(o).length > 0, 'give at least one of name, category, price, stock');
const Views = z.object({ views: z.number().int() });

interface Row { id: number; name: string; category: (typeof CATEGORIES)[number]; price_cents: number; stock: number }
const COLUMNS = 'id, name, category, price_cents, stock';
const toProduct = (r: Row): Product => ({ id: r.id, name: r.name, price: r.price_cents / 100, stock: r.stock, category: r.category });

/** A strong ETag: the first 128 bits of SHA-256 over the (canonical) JSON the client gets. */
async function etagOf(value: unknown): Promise<string> {
  return `"${(await fingerprint(value)).slice(0, 32)}"`;
}

/** If-None-Match uses the weak comparison (RFC 9110 §13.1.2): `W/` is ignored, `*` matches. */
function notModified(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(',').some((t) => {
    const tag = t.trim().replace(/^W\//, '');
    return tag === '*' || tag === etag;
  });
}

/** For {@link d1}: a foreign key refusing a write is a 409, not an outage. */
const referenced = (cause: unknown) =>
  cause instanceof Error && cause.message.includes('FOREIGN KEY constraint failed') ? new AppError('conflict', { detail: 'Other records refer to this product.', cause }) : undefined;

/** Cache keys (the cache namespaces them under the app prefix). */
export const productKey = (id: number) => `product:${id}`;
const pageKey = (q: z.output<typeof ListQuery>) => `products:${q.category ?? 'all'}:${q.page}:${q.pageSize}`;

type Cached<T> = { body: T; etag: string };

/** One body with its validators, 304 when the client has it. */
// Generic in the env: the validators narrow the handlers' context type.
function send<T, E extends AppEnv>(c: Context<E>, r: CacheResult<Cached<T>>) {
  const headers = { ...cacheHeaders(r), 'Cache-Control': PRODUCT_CACHE_CONTROL, ETag: r.value.etag };
  if (notModified(c.req.header('if-none-match'), r.value.etag)) return c.body(null, 304, headers);
  return c.json(r.value.body, 200, headers);
}

const te = new TextEncoder();
/** Constant-time equality of two secrets of any length: both are hashed to 32 bytes first. */
async function sameSecret(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([crypto.subtle.digest('SHA-256', te.encode(given)), crypto.subtle.digest('SHA-256', te.encode(expected))]);
  return crypto.subtle.timingSafeEqual(a, b);
}

/** `Authorization: Bearer <ADMIN_TOKEN>` or 401. An unset ADMIN_TOKEN refuses everyone. */
const requireAdmin = createMiddleware<AppEnv>(async function requireAdmin(c, next) {
  const given = /^Bearer ([!-~]+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
  const expected = c.env.ADMIN_TOKEN;
  if (!expected) console.error('[products] ADMIN_TOKEN is not set: every admin request is refused');
  if (given === undefined || !expected || !(await sameSecret(given, expected))) {
    throw new AppError('unauthorized', { detail: 'This route needs Authorization: Bearer <ADMIN_TOKEN>.', headers: { 'WWW-Authenticate': 'Bearer realm="admin"' } });
  }
  await next();
});

type ProductEvent = { type: 'product.created' | 'product.updated' | 'product.deleted'; id: number; at: number };

/**
 * After a D1 write: the product's entry, the `products` tag and the event in ONE round trip (the
 * three are started in the same task, so the task-batched client sends them together).
 */
async function announce<E extends AppEnv>(c: Context<E>, type: ProductEvent['type'], id: number): Promise<void> {
  const { cache, redis, keys } = c.var.services;
  const event: ProductEvent = { type, id, at: Date.now() };
  try {
    await Promise.all([cache.invalidate(productKey(id)), cache.invalidateTag('products'), publishJson(redis, keys.key('events', 'products'), event)]);
  } catch (cause) {
    const what = type.slice('product.'.length);
    throw new AppError('unavailable', {
      detail: `Product ${id} was ${what} and the change is stored, but the caches could not be invalidated: reads may show the old data for up to an hour.`,
      extensions: { id, stored: true },
      headers: { 'Retry-After': '5' },
      cause,
    });
  }
}

const products = new Hono<AppEnv>();

products.get('/', doc({
  summary: 'A page of products', tags: ['products'],
  description: 'Cached per (category, page, pageSize) under the tag `products`; `X-Cache`, `ETag`, 304 on If-None-Match.',
  responses: { 200: { description: 'The page', body: Page }, 304: { description: 'Not modified' } },
}), validate('query', ListQuery), async (c) => {
  const q = c.req.valid('query');
  const r = await c.var.services.cache.getOrLoad(pageKey(q), async (): Promise<Cached<Page>> => {
    const where = q.category ? 'WHERE category = ?1' : 'WHERE ?1 IS NULL';
    const [items, count] = await d1(
      c.env.DB.batch([
        c.env.DB.prepare(`SELECT ${COLUMNS} FROM products ${where} ORDER BY id LIMIT ?2 OFFSET ?3`).bind(q.category ?? null, q.pageSize, (q.page - 1) * q.pageSize),
        c.env.DB.prepare(`SELECT count(*) AS n FROM products ${where}`).bind(q.category ?? null),
      ]),
      'product database',
      referenced,
    );
    const total = (count?.results[0] as { n: number } | undefined)?.n ?? 0;
    const body: Page = { items: (items?.results as Row[] | undefined ?? []).map(toProduct), page: q.page, pageSize: q.pageSize, total, totalPages: Math.ceil(total / q.pageSize) };
    return { body, etag: await etagOf(body) };
  }, { tags: ['products'], ctx: c.executionCtx });
  return send(c, r);
});

products.get('/:id', doc({
  summary: 'One product', tags: ['products'],
  description: 'Cache-aside 1 h, stale-while-revalidate 5 min, single flight. `X-Cache: HIT | STALE | MISS`, `ETag`, 304 on If-None-Match. Counts a page view.',
  responses: { 200: { description: 'The product', body: Product }, 304: { description: 'Not modified' }, 404: { description: 'No such product' } },
}), validate('param', IdParam), async (c) => {
  const { id } = c.req.valid('param');
  const r = await c.var.services.cache.getOrLoad(productKey(id), async (): Promise<Cached<Product> | null> => {
    const row = await d1(c.env.DB.prepare(`SELECT ${COLUMNS} FROM products WHERE id = ?1`).bind(id).first<Row>(), 'product database', referenced);
    if (!row) return null;
    const body = toProduct(row);
    return { body, etag: await etagOf(body) };
  }, { ...PRODUCT_CACHE, ctx: c.executionCtx });
  if (r.value === null) {
    throw new AppError('not_found', { detail: `There is no product ${id}.`, headers: { ...cacheHeaders(r), 'Cache-Control': PRODUCT_CACHE_CONTROL } });
  }
  if (c.req.method === 'GET') {
    // After the response is settled: in the rate limiter's concurrent mode this handler runs beside
    // the check, and a request it refuses (429) is not a view. By the next task the check, which
    // came back in the same HTTP response as the cache read, has decided.
    c.executionCtx.waitUntil(
      new Promise((resolve) => setTimeout(resolve, 0)).then(() => (c.res.status === 200 || c.res.status === 304 ? countView(c.env, id) : undefined)),
    );
  }
  return send(c, { ...r, value: r.value });
});

products.get('/:id/views', doc({
  summary: 'Page views of a product', tags: ['products'],
  description: 'D1 plus the views not flushed yet, exact: 1 Redis round trip, then 1 D1 query.',
  responses: { 200: { description: 'The count', body: Views }, 404: { description: 'No such product' } },
}), validate('param', IdParam), async (c) => {
  const { id } = c.req.valid('param');
  let views: number | null;
  try {
    views = await readViews(c.env, id);
  } catch (cause) {
    throw new AppError('unavailable', { detail: 'View counts are unavailable right now; try again shortly.', headers: { 'Retry-After': '5' }, cause });
  }
  if (views === null) throw new AppError('not_found', { detail: `There is no product ${id}.` });
  return c.json({ views }, 200, { 'Cache-Control': 'no-store' });
});

products.post('/', doc({
  summary: 'Create a product', tags: ['products'], security: 'admin',
  responses: { 201: { description: 'Created', body: Product }, 401: { description: 'No or wrong admin token' } },
}), requireAdmin, validate('json', ProductInput), async (c) => {
  const b = c.req.valid('json');
  const now = Date.now();
  const row = await d1(
    c.env.DB.prepare(`INSERT INTO products (name, category, price_cents, stock, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING ${COLUMNS}`)
      .bind(b.name, b.category, Math.round(b.price * 100), b.stock, now)
      .first<Row>(),
    'product database',
    referenced,
  );
  if (!row) throw new AppError('internal', { detail: 'The product was not created.' });
  c.header('Location', `/products/${row.id}`);
  await announce(c, 'product.created', row.id);
  return c.json(toProduct(row), 201);
});

products.patch('/:id', doc({
  summary: 'Change a product', tags: ['products'], security: 'admin',
  responses: { 200: { description: 'The product as stored', body: Product }, 401: { description: 'No or wrong admin token' }, 404: { description: 'No such product' } },
}), requireAdmin, validate('param', IdParam), validate('json', ProductPatch), async (c) => {
  const { id } = c.req.valid('param');
  const b = c.req.valid('json');
  const sets: string[] = [];
  const args: (string | number)[] = [];
  const set = (column: string, value: string | number | undefined) => {
    if (value === undefined) return;
    args.push(value);
    sets.push(`${column} = ?${args.length}`);
  };
  set('name', b.name);
  set('category', b.category);
  set('price_cents', b.price === undefined ? undefined : Math.round(b.price * 100));
  set('stock', b.stock);
  args.push(Date.now(), id);
  const row = await d1(
    c.env.DB.prepare(`UPDATE products SET ${sets.join(', ')}, updated_at = ?${args.length - 1} WHERE id = ?${args.length} RETURNING ${COLUMNS}`)
      .bind(...args)
      .first<Row>(),
    'product database',
    referenced,
  );
  if (!row) throw new AppError('not_found', { detail: `There is no product ${id}.` });
  await announce(c, 'product.updated', id);
  return c.json(toProduct(row), 200);
});

products.delete('/:id', doc({
  summary: 'Delete a product', tags: ['products'], security: 'admin',
  description: 'A product that appears in an order cannot be deleted (409): set its stock to 0 instead.',
  responses: { 204: { description: 'Deleted' }, 401: { description: 'No or wrong admin token' }, 404: { description: 'No such product' }, 409: { description: 'The product appears in orders' } },
}), requireAdmin, validate('param', IdParam), async (c) => {
  const { id } = c.req.valid('param');
  const unordered = 'NOT EXISTS (SELECT 1 FROM order_items WHERE product_id = ?1)';
  const [, deleted, left] = await d1(
    // A concurrent checkout can add an order line between the check and the delete; the foreign key
    // then refuses the delete, which is the same answer as the check's.
    c.env.DB.batch([
      c.env.DB.prepare(`DELETE FROM product_views WHERE product_id = ?1 AND ${unordered}`).bind(id),
      c.env.DB.prepare(`DELETE FROM products WHERE id = ?1 AND ${unordered}`).bind(id),
      c.env.DB.prepare('SELECT count(*) AS n FROM products WHERE id = ?1').bind(id),
    ]),
    'product database',
    referenced,
  );
  if ((deleted?.meta.changes ?? 0) === 0) {
    if (((left?.results[0] as { n: number } | undefined)?.n ?? 0) === 0) throw new AppError('not_found', { detail: `There is no product ${id}.` });
    throw new AppError('conflict', { detail: `Product ${id} appears in orders and cannot be deleted; set its stock to 0 to stop selling it.` });
  }
  await announce(c, 'product.deleted', id);
  return c.body(null, 204);
});

export default products;
