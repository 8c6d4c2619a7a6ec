/**
 * `POST /checkout` with an `Idempotency-Key` header: turns the session's cart into an order.
 *
 * 1. The key (1..100 visible ASCII characters) is scoped to the visitor (`user:<id>`, else the
 *    session's handle) and hashed: one visitor can never claim, or read, another's order by key.
 *    (So a retry across a login, which changes the scope, counts as a new request.) The request's
 *    fingerprint is a hash of the cart's lines.
 * 2. The key is claimed (SET NX GET PX, src/lib/idempotency.ts) in the same round trip as a first
 *    try at every product's lock (src/lib/multilock.ts); a busy lock is then waited for in a fixed
 *    (sorted) order, so two checkouts never deadlock. A duplicate in progress gets 409 + Retry-After; a
 *    finished one gets the same 201 again with `Idempotent-Replayed: true`; the same key with a
 *    different cart gets 422. Only a placed order is stored for replay: a refusal (409, 422) leaves
 *    the key free, since no order exists under it.
 * 3. ONE D1 batch (a transaction) decrements each stock, checks the lock's fence, writes the order
 *    and its lines, whatever the cart's size (see {@link orderStatements}). A short stock, a stale
 *    fence or a vanished product makes a statement fail, so nothing of the batch applies; a second
 *    read tells which (409 naming the short products, 422 for unknown ones, 409 retry otherwise).
 *    `orders.idempotency_key` is UNIQUE: if Redis lost the key's record, the batch fails on it and the
 *    order already in D1 is replayed.
 * 4. After the commit, in ONE round trip: the locks' release, the stored response, a ZINCRBY per
 *    product on the best sellers, the product cache entries' invalidation (and the list pages', by
 *    the `products` tag) and the inventory event. A failure there is logged and the answer is
 *    still 201: the order is in D1 (a retry of the key finds it there); the leaderboard can be
 *    rebuilt from order_items, a cache entry expires (1 h) and the locks' leases run out (10 s).
 * 5. The cart is emptied (the session's save, after the handler).
 *
 * An empty cart is 422 (`unprocessable`), not 400: the request is well formed, the state it acts on
 * is what cannot be processed. A retry whose original already emptied the cart is still replayed.
 *
 * Round trips (Redis), happy path with warm scripts: per-IP check; session load; claim + lock tries
 * (SET, EVALSHA × products); after-commit writes; session save. 5, plus the D1 batch.
 */
import { Hono } from 'hono';
import { z } from 'zod';
import type { AppEnv } from '../env.ts';
import { AppError } from '../lib/errors.ts';
import { createIdempotency, fingerprint, type Claim, type Idempotency, type StoredResponse } from '../lib/idempotency.ts';
import type { Lock } from '../lib/lock.ts';
import { acquireAll, releaseAll } from '../lib/multilock.ts';
import { publishJson } from '../lib/pubsub.ts';
import { services } from '../services.ts';
import { MAX_LINES, MAX_QUANTITY } from './cart.ts';
import { inventoryChannel, type InventoryEvent } from './events.ts';
import { bestSellers } from './leaderboard.ts';
import { productKey } from './products.ts';
import { route, validate } from './openapi.ts';

/** A product's lock lease: far longer than one D1 batch; the fence covers a holder paused past it. */
export const LOCK_LEASE_MS = 10_000;
/** How long a checkout waits for busy product locks before answering 409. */
export const LOCK_WAIT_MS = 5_000;
/** How long a claimed key blocks duplicates if its request dies before finishing. */
export const PENDING_MS = 30_000;
/** How long a placed order is replayed for its key. */
export const REPLAY_MS = 86_400_000;

/** The lock of one product. */
export const productLock = (productId: number) => `product:${productId}`;

/** One line of the cart, as ordered. */
export interface Line {
  productId: number;
  quantity: number;
}

const OrderItem = z.object({ productId: z.number().int(), quantity: z.number().int(), price: z.number(), lineTotal: z.number() });
const Order = z.object({ orderId: z.string(), items: z.array(OrderItem), total: z.number() });
export type OrderBody = z.infer<typeof Order>;

const IdempotencyHeader = z.object({
  'idempotency-key': z
    .string({ error: 'Required: a unique key per order, e.g. a UUID' })
    .regex(/^[\x21-\x7E]{1,100}$/, '1 to 100 visible ASCII characters')
    .describe('A unique key per order (e.g. a UUID): retrying with the same key never orders twice'),
});

const idems = new WeakMap<Env, Idempotency>();
function idempotency(env: Env): Idempotency {
  let i = idems.get(env);
  if (!i) {
    const s = services(env);
    i = createIdempotency({ redis: s.redis, keys: s.keys, namespace: 'checkout', pendingMs: PENDING_MS, ttlMs: REPLAY_MS });
    idems.set(env, i);
  }
  return i;
}

/**
 * Drops the cached copies that show the stock just changed: each product's entry (the key of
 * src/functions/products.ts) and, through the `products` tag, every cached list page, since pages
 * show stock too. Trade-off: every order retires the list pages; a shop whose lists can live with a
 * stale stock figure could skip the tag (the inventory events carry the live numbers).
 */
function invalidateProducts(env: Env, ids: readonly number[]): Promise<unknown>[] {
  const { cache } = services(env);
  return [...ids.map((id) => cache.invalidate(productKey(id))), cache.invalidateTag('products')];
}

// ---------------------------------------------------------------------------------------------
// D1

/**
 * The batch that places an order, five statements for any number of lines (the lines travel as one
 * JSON parameter, read with json_each), so a large cart stays far below D1's per-invocation query
 * limit. Run with `db.batch()`: D1 runs a batch as one transaction and rolls it all back when a
 * statement fails. An UPDATE that matches no row is not a failure in SQL, so the checks live in the
 * SET: a short stock or a fence not above the row's makes the new stock NULL, which the NOT NULL
 * constraint refuses; a vanished product leaves its line's price NULL, refused the same way. The
 * last statement answers the lines with their prices and the stock left.
 */
export function orderStatements(db: D1Database, order: { orderId: string; idempotencyKey: string; userId: number | null; createdAt: number; lines: readonly (Line & { fence: number })[] }): D1PreparedStatement[] {
  const lines = JSON.stringify(order.lines.map((l) => [l.productId, l.quantity, l.fence]));
  const each = `SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS quantity, json_extract(value, '$[2]') AS fence FROM json_each(?1)`;
  return [
    db.prepare('INSERT INTO orders (id, idempotency_key, user_id, total_cents, created_at) VALUES (?1, ?2, ?3, 0, ?4)')
      .bind(order.orderId, order.idempotencyKey, order.userId, order.createdAt),
    decrementStatement(db, order.lines, order.createdAt),
    db.prepare(`INSERT INTO order_items (order_id, product_id, quantity, price_cents)
      SELECT ?2, l.id, l.quantity, (SELECT price_cents FROM products WHERE id = l.id) FROM (${each}) AS l`)
      .bind(lines, order.orderId),
    db.prepare('UPDATE orders SET total_cents = (SELECT SUM(quantity * price_cents) FROM order_items WHERE order_id = ?1) WHERE id = ?1')
      .bind(order.orderId),
    db.prepare(`SELECT i.product_id, i.quantity, i.price_cents, p.stock FROM order_items AS i JOIN products AS p ON p.id = i.product_id
      WHERE i.order_id = ?1 ORDER BY i.product_id`)
      .bind(order.orderId),
  ];
}

/**
 * Takes `quantity` off each line's product, fenced: the row's `fence` must be below the line's, and
 * becomes it. A short stock or a stale fence fails the statement (NOT NULL constraint on `stock`)
 * instead of silently matching no row, so the batch around it is rolled back.
 */
export function decrementStatement(db: D1Database, lines: readonly (Line & { fence: number })[], now: number): D1PreparedStatement {
  return db.prepare(`UPDATE products AS p
      SET stock = CASE WHEN p.stock >= l.quantity AND p.fence < l.fence THEN p.stock - l.quantity END,
          fence = l.fence, updated_at = ?2
      FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS quantity, json_extract(value, '$[2]') AS fence FROM json_each(?1)) AS l
      WHERE p.id = l.id`)
    .bind(JSON.stringify(lines.map((l) => [l.productId, l.quantity, l.fence])), now);
}

type OrderRow = { order_id: string; total_cents: number; product_id: number; quantity: number; price_cents: number };

function orderBody(orderId: string, rows: readonly { product_id: number; quantity: number; price_cents: number }[], totalCents?: number): OrderBody {
  const items = rows.map((r) => ({ productId: r.product_id, quantity: r.quantity, price: r.price_cents / 100, lineTotal: (r.quantity * r.price_cents) / 100 }));
  const total = totalCents ?? rows.reduce((sum, r) => sum + r.quantity * r.price_cents, 0);
  return { orderId, items, total: total / 100 };
}

/** The order placed under `idempotencyKey`, if any, with the lines it was placed for. */
function findOrderStatement(db: D1Database, idempotencyKey: string): D1PreparedStatement {
  return db.prepare(`SELECT o.id AS order_id, o.total_cents, i.product_id, i.quantity, i.price_cents
      FROM orders AS o JOIN order_items AS i ON i.order_id = o.id WHERE o.idempotency_key = ?1 ORDER BY i.product_id`)
    .bind(idempotencyKey);
}

function existing(rows: readonly OrderRow[]): { body: OrderBody; lines: Line[] } | null {
  const first = rows[0];
  if (!first) return null;
  return { body: orderBody(first.order_id, rows, first.total_cents), lines: rows.map((r) => ({ productId: r.product_id, quantity: r.quantity })) };
}

type Placed =
  | { kind: 'placed'; body: OrderBody; stock: { productId: number; stock: number }[] }
  | { kind: 'exists'; body: OrderBody; lines: Line[] }
  | { kind: 'unknown'; productIds: number[] }
  | { kind: 'short'; products: { productId: number; requested: number; available: number }[] }
  | { kind: 'refused'; cause: unknown };

/** Writes the order; on a refused batch, reads why (under the same locks, so the answer holds). */
async function placeOrder(db: D1Database, order: Parameters<typeof orderStatements>[1]): Promise<Placed> {
  let failure: unknown;
  try {
    const results = await db.batch(orderStatements(db, order));
    const rows = (results.at(-1)?.results ?? []) as { product_id: number; quantity: number; price_cents: number; stock: number }[];
    return { kind: 'placed', body: orderBody(order.orderId, rows), stock: rows.map((r) => ({ productId: r.product_id, stock: r.stock })) };
  } catch (err) {
    failure = err;
  }
  const ids = order.lines.map((l) => l.productId);
  const [products, found] = await db.batch([
    db.prepare(`SELECT id, stock FROM products WHERE id IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(ids)),
    findOrderStatement(db, order.idempotencyKey),
  ]);
  const stock = new Map(((products?.results ?? []) as { id: number; stock: number }[]).map((p) => [p.id, p.stock]));
  const prior = existing((found?.results ?? []) as OrderRow[]);
  // Our own batch committed but its answer was lost on the way back: it is placed.
  if (prior?.body.orderId === order.orderId) return { kind: 'placed', body: prior.body, stock: prior.lines.map((l) => ({ productId: l.productId, stock: stock.get(l.productId) ?? 0 })) };
  if (prior) return { kind: 'exists', ...prior };
  const unknown = ids.filter((id) => !stock.has(id));
  if (unknown.length) return { kind: 'unknown', productIds: unknown };
  const short = order.lines.filter((l) => stock.get(l.productId)! < l.quantity).map((l) => ({ productId: l.productId, requested: l.quantity, available: stock.get(l.productId)! }));
  if (short.length) return { kind: 'short', products: short };
  return { kind: 'refused', cause: failure };
}

// ---------------------------------------------------------------------------------------------
// Request

/** The cart's lines sorted by product id; `null` if any line is not a valid one. */
function cartLines(raw: unknown): Line[] | null {
  if (raw === undefined || raw === null) return [];
  if (typeof raw !== 'object' || Array.isArray(raw)) return null;
  const lines: Line[] = [];
  for (const [k, v] of Object.entries(raw)) {
    if (!/^[1-9]\d{0,9}$/.test(k) || Number(k) > 2_147_483_647 || !Number.isInteger(v) || (v as number) < 1 || (v as number) > MAX_QUANTITY) return null;
    lines.push({ productId: Number(k), quantity: v as number });
  }
  return lines.sort((a, b) => a.productId - b.productId);
}

/** A refusal of the body: the order comes from the cart, so the body is empty or `{}`. */
async function checkEmptyBody(body: Promise<string>): Promise<void> {
  const text = (await body).trim();
  if (text === '') return;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    doc = undefined;
  }
  const ok = typeof doc === 'object' && doc !== null && !Array.isArray(doc);
  const fields = ok ? Object.keys(doc as object) : [];
  if (ok && fields.length === 0) return;
  const errors = ok ? fields.map((field) => ({ in: 'json', field, message: 'Unexpected field: the order is built from the cart' })) : [{ in: 'json', field: '(root)', message: 'Not a JSON object' }];
  throw new AppError('bad_request', { detail: `Invalid body: send no body (or {}); the order is built from the cart. ${errors.map((e) => `${e.field} (${e.message})`).join('; ')}`, extensions: { errors } });
}

const lineFingerprint = (lines: readonly Line[]) => fingerprint(lines.map((l) => [l.productId, l.quantity]));

const reused = () => new AppError('unprocessable', { detail: 'This Idempotency-Key was already used for a different cart. Use a new key for a new order.' });
const busy = (detail: string) => new AppError('conflict', { detail, headers: { 'retry-after': '1' } });

/** Logs a failure by name and message only: Redis messages quote their commands. */
function failureName(err: unknown): string {
  if (!(err instanceof Error)) return typeof err;
  const cause = err.cause instanceof Error ? ` <- ${err.cause.name}: ${err.cause.message.replace(/,? command was: [\s\S]*$/, '')}` : '';
  return `${err.name}: ${err.message.replace(/,? command was: [\s\S]*$/, '')}${cause}`;
}

const checkout = new Hono<AppEnv>();

route({
  method: 'post', path: '/checkout', tags: ['checkout'], summary: 'Order what is in the cart', security: 'session',
  description: 'No body (or `{}`): the order is the session\'s cart. Retry with the same `Idempotency-Key` after any failure: a placed order is answered again (`Idempotent-Replayed: true`), never placed twice. The cart is emptied.',
  headers: IdempotencyHeader,
  responses: {
    201: { description: 'The order (also for a replayed key)', body: Order },
    409: { description: 'Not enough stock (`products` lists each short line), the same key still in progress, or products busy (Retry-After)' },
    422: { description: 'The cart is empty or holds products that no longer exist, or the key was used for a different cart' },
  },
});
checkout.post('/', validate('header', IdempotencyHeader), async (c) => {
  const clientKey = c.req.valid('header')['idempotency-key'];
  await checkEmptyBody(c.req.text());
  const replay = (response: StoredResponse) => {
    c.header('Idempotent-Replayed', 'true');
    return c.json(response.body as OrderBody, response.status as 201);
  };
  const env = c.env;
  const s = services(env);
  const idem = idempotency(env);
  const session = c.get('session');

  const [rawCart, user, handle] = await Promise.all([session.get('cart'), session.getUser(), session.handle()]);
  const lines = cartLines(rawCart);
  if (lines === null) throw new AppError('unprocessable', { detail: 'The cart holds a line that is not valid; empty it with DELETE /cart/items/:productId and add the products again.' });
  if (lines.length > MAX_LINES) throw new AppError('unprocessable', { detail: `A cart holds at most ${MAX_LINES} different products.` });
  const scope = user !== undefined ? `user:${user}` : handle !== undefined ? `session:${handle}` : undefined;
  const key = scope === undefined ? undefined : await fingerprint(['checkout', scope, clientKey]);

  if (lines.length === 0 || key === undefined) {
    // A retry of an order that already emptied the cart: answer it again.
    if (key !== undefined) {
      const record = await idem.peek(key);
      if (record?.state === 'completed') return replay(record.response);
      const prior = existing((await findOrderStatement(env.DB, key).all<OrderRow>()).results);
      if (prior) return replay({ status: 201, body: prior.body });
    }
    throw new AppError('unprocessable', { detail: 'The cart is empty: add products with POST /cart/items first.' });
  }

  const fp = await lineFingerprint(lines);
  const stop = new AbortController();
  const claiming = idem.begin(key, fp);
  // Same tick as the claim: one round trip for the claim and every lock's first try.
  const locking = acquireAll(s.locks, lines.map((l) => productLock(l.productId)), { leaseMs: LOCK_LEASE_MS, waitMs: LOCK_WAIT_MS, signal: stop.signal });
  const dropLocks = async () => {
    stop.abort(new Error('checkout: locks not needed'));
    const held = await locking.catch(() => null);
    if (held) await releaseAll(held);
  };

  let claim: Claim;
  try {
    claim = await claiming;
  } catch (err) {
    await dropLocks();
    throw err;
  }
  if (claim.state !== 'claimed') {
    await dropLocks();
    if (!claim.sameRequest) throw reused();
    if (claim.state === 'in_progress') throw busy('A checkout with this Idempotency-Key is still in progress; retry shortly with the same key.');
    session.delete('cart'); // the original's own effect, in case its save was lost
    return replay(claim.response);
  }

  const token = claim.token;
  const giveBack = (held: readonly Lock[]) =>
    Promise.all([releaseAll(held), idem.release(key, token).catch((err: unknown) => console.error(`[checkout] could not free an idempotency key: ${failureName(err)}`))]);

  let held: Lock[] | null;
  try {
    held = await locking;
  } catch (err) {
    await giveBack([]);
    throw err; // LockUnavailableError: 503
  }
  if (!held) {
    await giveBack([]);
    throw busy('Another checkout is updating these products; retry shortly with the same Idempotency-Key.');
  }

  const fences = new Map(held.map((l) => [l.resource, l.fence]));
  const orderId = crypto.randomUUID();
  const userId = user !== undefined && /^[1-9]\d{0,15}$/.test(user) ? Number(user) : null;
  let placed: Placed;
  try {
    placed = await placeOrder(env.DB, { orderId, idempotencyKey: key, userId, createdAt: Date.now(), lines: lines.map((l) => ({ ...l, fence: fences.get(productLock(l.productId))! })) });
  } catch (cause) {
    await giveBack(held);
    throw new AppError('unavailable', { detail: 'The order could not be written; retry with the same Idempotency-Key.', headers: { 'retry-after': '1' }, cause });
  }

  switch (placed.kind) {
    case 'exists': {
      // Redis had lost the key's record; D1 had the order. Same cart: the same answer again.
      const same = (await lineFingerprint(placed.lines)) === fp;
      const response = { status: 201, body: placed.body };
      await Promise.all([releaseAll(held), same ? idem.complete(key, fp, response).catch(() => undefined) : idem.release(key, token).catch(() => false)]);
      if (!same) throw reused();
      session.delete('cart');
      return replay(response);
    }
    case 'unknown':
      await giveBack(held);
      throw new AppError('unprocessable', { detail: `The cart holds products that no longer exist: ${placed.productIds.join(', ')}. Remove them and retry.`, extensions: { products: placed.productIds } });
    case 'short':
      await giveBack(held);
      throw new AppError('conflict', {
        detail: `Not enough stock for product${placed.products.length > 1 ? 's' : ''} ${placed.products.map((p) => `${p.productId} (${p.available} left)`).join(', ')}.`,
        extensions: { products: placed.products },
      });
    case 'refused':
      await giveBack(held);
      console.error(`[checkout] order batch refused without a short stock (a lock lost to its lease?): ${failureName(placed.cause)}`);
      throw busy('The stock changed while the order was being placed; retry with the same Idempotency-Key.');
    case 'placed':
      break;
  }

  const response = { status: 201, body: placed.body };
  const event: InventoryEvent = { type: 'inventory.changed', items: placed.stock, at: Date.now() };
  const board = bestSellers(env);
  // Everything below leaves in ONE round trip: all of it is issued in this tick.
  const steps: [string, Promise<unknown>][] = [
    ['locks', releaseAll(held)],
    ['idempotency', idem.complete(key, fp, response)],
    ...lines.map((l): [string, Promise<unknown>] => ['leaderboard', board.increment(String(l.productId), l.quantity)]),
    ...invalidateProducts(env, lines.map((l) => l.productId)).map((p): [string, Promise<unknown>] => ['cache', p]),
    ['event', publishJson(s.redis, inventoryChannel(env), event)],
  ];
  const results = await Promise.allSettled(steps.map(([, p]) => p));
  const failed = [...new Set(results.flatMap((r, i) => (r.status === 'rejected' ? [`${steps[i]![0]} (${failureName(r.reason)})`] : [])))];
  if (failed.length) console.error(`[checkout] order ${orderId} placed, but after-commit steps failed (repairable): ${failed.join('; ')}`);

  session.delete('cart');
  return c.json(placed.body, 201);
});

export default checkout;
