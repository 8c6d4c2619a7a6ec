/**
 * The shopping cart, kept in the visitor's session (`cart`: productId → quantity), so it needs no
 * account and carries over at login (the session keeps its data when its id is regenerated).
 *
 * - A visitor gets a session, and its cookie, only when something is first put in the cart; reading
 *   an empty cart costs no Redis at all.
 * - Quantities are 1..99 per line and at most {@link MAX_LINES} lines. Adding a product already in
 *   the cart adds to its quantity, capped at 99. A line may not exceed the stock D1 has now: 409
 *   with `available` (the cart is left unchanged). The stock is checked again, for real, at checkout.
 * - `GET /cart` prices each line from the product cache that `GET /products/:id` fills (one round
 *   trip for every line), and reads what the cache lacks from D1 in one query; it does not fill the
 *   cache itself. Products deleted since they were added are left out.
 * - Bodies are strict: an unknown field is a 400 naming it. DELETE is idempotent (204 either way).
 * - Two requests of one session changing the cart at the same moment can lose one of the two
 *   changes (the whole `cart` field is written); a person editing a cart is not that fast.
 * - Answers are `Cache-Control: no-store`: they are one visitor's.
 *
 * Round trips to Redis, the app-wide per-IP check included, once Redis has the scripts cached:
 * - GET 1 without a cookie (the check); 2 with one: the check + the session load together (a GET
 *   runs beside its check) → one read script per line's cache entry (+ one D1 query for misses);
 * - POST, PATCH, DELETE 3 with a cookie: the check → the session load, beside the D1 stock read →
 *   the save; POST without a cookie 2: the check → the new session.
 */
import { Hono } from 'hono';
import { z } from 'zod';
import type { AppEnv, SessionShape } from '../env.ts';
import type { Session } from 'edge-redis/session';
import { AppError } from '../errors.ts';
import { d1 } from './d1.ts';
import { doc, validate } from './openapi.ts';
import { productKey } from './products.ts';

/** Most distinct products in one cart (also keeps the D1 fallback under its 100 bound parameters). */
export const MAX_LINES = 50;
/** Most of one product in one cart. */
export const MAX_QUANTITY = 99;

// The bounds of the products routes: any id /products/:id takes, the cart takes.
const ProductId = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const ProductIdParam = z.object({
  productId: z.string().regex(/^[1-9]\d{0,15}$/, 'A product id: a whole number from 1').transform(Number).pipe(ProductId),
});
const AddItem = z.strictObject({ productId: ProductId, quantity: z.number().int().min(1).max(MAX_QUANTITY) });
const SetQuantity = z.strictObject({ quantity: z.number().int().min(0).max(MAX_QUANTITY).describe('0 removes the line') });
const Line = z.object({ productId: z.number().int(), quantity: z.number().int() });
const Cart = z.object({
  items: z.array(z.object({ productId: z.number().int(), quantity: z.number().int(), name: z.string(), price: z.number(), lineTotal: z.number() })),
  total: z.number(),
});

/**
 * What the cart needs of a product entry that `GET /products/:id` cached (`{ body: Product, etag }`,
 * or null for "no such product"); anything else in it is ignored. An entry of another shape counts
 * as a miss (priced from D1) and is reported by the cache, so a change there cannot misprice a cart.
 */
const CachedProduct = z.object({ body: z.object({ name: z.string(), price: z.number().nonnegative() }) });

/** The session's cart as a Map in product id order, dropping anything malformed (the session is ours, but be strict). */
function readCart(raw: unknown): Map<number, number> {
  const cart = new Map<number, number>();
  if (typeof raw !== 'object' || raw === null) return cart;
  const entries = Object.entries(raw as Record<string, unknown>)
    .map(([k, v]) => [/^[1-9]\d{0,15}$/.test(k) ? Number(k) : NaN, v] as const)
    .filter((e): e is readonly [number, number] => ProductId.safeParse(e[0]).success && Number.isInteger(e[1]) && (e[1] as number) >= 1 && (e[1] as number) <= MAX_QUANTITY)
    .sort((a, b) => a[0] - b[0]);
  for (const [id, q] of entries) cart.set(id, q);
  return cart;
}

/** Stores the cart, with its id: kept while the cart has lines (minted with the first), dropped with the last. */
async function save(session: Session<SessionShape>, cart: Map<number, number>): Promise<void> {
  session.set('cart', cart.size ? Object.fromEntries([...cart].map(([id, q]) => [String(id), q])) : undefined);
  session.set('cartId', cart.size ? ((await session.get('cartId')) ?? crypto.randomUUID()) : undefined);
}

const cents = (price: number) => Math.round(price * 100);

const cart = new Hono<AppEnv>();

cart.use(async (c, next) => {
  await next();
  c.header('Cache-Control', 'no-store');
});

cart.get('/', doc({
  tags: ['cart'], summary: 'This visitor\'s cart, priced', security: 'session',
  description: 'Lines in product id order; `price` and `lineTotal` in currency units. Empty without a session.',
  responses: { 200: { description: 'The cart', body: Cart } },
}), async (c) => {
  const lines = readCart(await c.get('session').get('cart'));
  if (lines.size === 0) return c.json({ items: [], total: 0 });
  const ids = [...lines.keys()];
  const found = await c.var.services.cache.getMany(ids.map(productKey), { validate: CachedProduct });
  const known = new Map<number, { name: string; priceCents: number }>();
  const missing: number[] = [];
  found.forEach((hit, i) => {
    const id = ids[i]!;
    if (hit.value === undefined) missing.push(id);
    else if (hit.value !== null) known.set(id, { name: hit.value.body.name, priceCents: cents(hit.value.body.price) });
    // null: the products route cached "no such product" (deleted): the line is left out.
  });
  if (missing.length) {
    const { results } = await d1(
      c.env.DB.prepare(`SELECT id, name, price_cents FROM products WHERE id IN (${missing.map(() => '?').join(', ')})`)
        .bind(...missing)
        .all<{ id: number; name: string; price_cents: number }>(),
      'product database',
    );
    for (const r of results) known.set(r.id, { name: r.name, priceCents: r.price_cents });
  }
  let total = 0;
  const items = ids.flatMap((productId) => {
    const p = known.get(productId);
    if (!p) return [];
    const quantity = lines.get(productId)!;
    total += p.priceCents * quantity;
    return [{ productId, quantity, name: p.name, price: p.priceCents / 100, lineTotal: (p.priceCents * quantity) / 100 }];
  });
  return c.json({ items, total: total / 100 });
});

cart.post('/items', doc({
  tags: ['cart'], summary: 'Put a product in the cart', security: 'session',
  description: `Adds to the quantity already there (capped at ${MAX_QUANTITY}); starts a session if there is none. 409 when the stock is short or the cart holds ${MAX_LINES} lines.`,
  responses: { 200: { description: 'The line as it is now', body: Line }, 404: { description: 'No such product' }, 409: { description: 'Not enough stock, or the cart is full' } },
}), validate('json', AddItem), async (c) => {
  const { productId, quantity } = c.req.valid('json');
  const session = c.get('session');
  // The session load (Redis) and the stock (D1) are independent: wait for both at once.
  const [raw, product] = await Promise.all([session.get('cart'), stockOf(c.env.DB, productId)]);
  if (!product) throw new AppError('not_found', { detail: `No product ${productId}.` });
  const lines = readCart(raw);
  if (!lines.has(productId) && lines.size >= MAX_LINES) throw new AppError('conflict', { detail: `A cart holds at most ${MAX_LINES} different products.` });
  const next = Math.min((lines.get(productId) ?? 0) + quantity, MAX_QUANTITY);
  short(productId, next, product.stock);
  lines.set(productId, next);
  await save(session, lines);
  return c.json({ productId, quantity: next }, 200);
});

cart.patch('/items/:productId', doc({
  tags: ['cart'], summary: 'Set the quantity of a line', security: 'session',
  responses: { 200: { description: 'The line as it is now (quantity 0: removed)', body: Line }, 404: { description: 'Not in the cart, or the product is gone' }, 409: { description: 'Not enough stock' } },
}), validate('param', ProductIdParam), validate('json', SetQuantity), async (c) => {
  const { productId } = c.req.valid('param');
  const { quantity } = c.req.valid('json');
  const session = c.get('session');
  const [raw, product] = await Promise.all([session.get('cart'), quantity > 0 ? stockOf(c.env.DB, productId) : null]);
  const lines = readCart(raw);
  if (!lines.has(productId)) throw new AppError('not_found', { detail: `Product ${productId} is not in your cart; add it with POST /cart/items.` });
  if (quantity === 0) lines.delete(productId);
  else {
    if (!product) throw new AppError('not_found', { detail: `No product ${productId}.` });
    short(productId, quantity, product.stock);
    lines.set(productId, quantity);
  }
  await save(session, lines);
  return c.json({ productId, quantity }, 200);
});

cart.delete('/items/:productId', doc({
  tags: ['cart'], summary: 'Remove a line', security: 'session',
  description: 'Idempotent: 204 whether or not the product was in the cart.',
  responses: { 204: { description: 'Not in the cart (any more)' } },
}), validate('param', ProductIdParam), async (c) => {
  const { productId } = c.req.valid('param');
  const session = c.get('session');
  const lines = readCart(await session.get('cart'));
  if (lines.delete(productId)) await save(session, lines);
  return c.body(null, 204);
});

function stockOf(db: D1Database, id: number): Promise<{ stock: number } | null> {
  return d1(db.prepare('SELECT stock FROM products WHERE id = ?1').bind(id).first<{ stock: number }>(), 'product database');
}

function short(productId: number, wanted: number, stock: number): void {
  if (wanted > stock) {
    throw new AppError('conflict', { detail: `Only ${stock} of product ${productId} in stock.`, extensions: { productId, available: stock } });
  }
}

export default cart;
