/**
 * The D1 side of `POST /checkout` (./checkout.ts): the one batch that places an order, and what a
 * refused batch tells once read again. D1 is the store of record; Redis may have forgotten anything
 * by the time a checkout runs, so every "has this happened?" is answered here:
 *
 * - `orders.idempotency_key` is UNIQUE: an order is placed once per (visitor, key), even if Redis
 *   lost the key's record.
 * - `orders.cart_id` is UNIQUE: a cart (its id lives in the session beside the cart) is ordered at
 *   most once, so a retry with a NEW key after a checkout whose cart could not be emptied (Redis
 *   failed after the commit) finds that order instead of placing it again.
 * - `products.fence`: each stock change carries its lock's fence and must be above the row's. A
 *   refusal whose row fence is at or above ours means Redis forgot the fence counter (or a lock):
 *   {@link placeOrder} answers `stale` with the floor to acquire above, and the caller retries.
 */
import type { OrderBody } from './checkout.ts';

/** One line of the cart, as ordered. */
export interface Line {
  productId: number;
  quantity: number;
}

export interface NewOrder {
  orderId: string;
  idempotencyKey: string;
  /** The session's cart id; null for a cart written before carts had ids. */
  cartId: string | null;
  userId: number | null;
  createdAt: number;
  lines: readonly (Line & { fence: number })[];
}

const EACH_LINE = `SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS quantity, json_extract(value, '$[2]') AS fence FROM json_each(?1)`;
const linesJson = (lines: readonly (Line & { fence: number })[]) => JSON.stringify(lines.map((l) => [l.productId, l.quantity, l.fence]));

/**
 * The batch that places an order, five statements for any number of lines (the lines travel as one
 * JSON parameter, read with json_each), so a large cart stays far below D1's per-invocation query
 * limit. Run with `db.batch()`: D1 runs a batch as one transaction and rolls it all back when a
 * statement fails. An UPDATE that matches no row is not a failure in SQL, so the checks live in the
 * SET: a short stock or a fence not above the row's makes the new stock NULL, which the NOT NULL
 * constraint refuses; a vanished product leaves its line's price NULL, refused the same way. The
 * last statement answers the lines with their prices and the stock left.
 */
export function orderStatements(db: D1Database, order: Omit<NewOrder, 'cartId'> & { cartId?: string | null }): D1PreparedStatement[] {
  return [
    db.prepare('INSERT INTO orders (id, idempotency_key, cart_id, user_id, total_cents, created_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)')
      .bind(order.orderId, order.idempotencyKey, order.cartId ?? null, order.userId, order.createdAt),
    decrementStatement(db, order.lines, order.createdAt),
    db.prepare(`INSERT INTO order_items (order_id, product_id, quantity, price_cents)
      SELECT ?2, l.id, l.quantity, (SELECT price_cents FROM products WHERE id = l.id) FROM (${EACH_LINE}) AS l`)
      .bind(linesJson(order.lines), order.orderId),
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
      FROM (${EACH_LINE}) AS l
      WHERE p.id = l.id`)
    .bind(linesJson(lines), now);
}

type OrderRow = { order_id: string; total_cents: number; product_id: number; quantity: number; price_cents: number; by_key: number };

function orderBody(orderId: string, rows: readonly { product_id: number; quantity: number; price_cents: number }[], totalCents?: number): OrderBody {
  const items = rows.map((r) => ({ productId: r.product_id, quantity: r.quantity, price: r.price_cents / 100, lineTotal: (r.quantity * r.price_cents) / 100 }));
  const total = totalCents ?? rows.reduce((sum, r) => sum + r.quantity * r.price_cents, 0);
  return { orderId, items, total: total / 100 };
}

/** An order found in D1, with the lines it was placed for and how it was found. */
export interface PriorOrder {
  body: OrderBody;
  lines: Line[];
  /** `key`: placed under this idempotency key; `cart`: placed from this cart under another key. */
  by: 'key' | 'cart';
}

/** The orders placed under `idempotencyKey` or from `cartId`, one row per line, the key's first. */
function findStatement(db: D1Database, idempotencyKey: string, cartId: string | null): D1PreparedStatement {
  return db.prepare(`SELECT o.id AS order_id, o.total_cents, i.product_id, i.quantity, i.price_cents, o.idempotency_key = ?1 AS by_key
      FROM orders AS o JOIN order_items AS i ON i.order_id = o.id
      WHERE o.idempotency_key = ?1 OR (?2 IS NOT NULL AND o.cart_id = ?2) ORDER BY by_key DESC, o.id, i.product_id`)
    .bind(idempotencyKey, cartId);
}

function prior(rows: readonly OrderRow[]): PriorOrder | null {
  const first = rows[0];
  if (!first) return null;
  const mine = rows.filter((r) => r.order_id === first.order_id);
  return { body: orderBody(first.order_id, mine, first.total_cents), lines: mine.map((r) => ({ productId: r.product_id, quantity: r.quantity })), by: first.by_key ? 'key' : 'cart' };
}

/** The order placed under the key, else from the cart, if any. One D1 query. */
export async function findOrder(db: D1Database, idempotencyKey: string, cartId: string | null): Promise<PriorOrder | null> {
  return prior((await findStatement(db, idempotencyKey, cartId).all<OrderRow>()).results);
}

export type Placed =
  | { kind: 'placed'; body: OrderBody; stock: { productId: number; stock: number }[] }
  | { kind: 'exists'; prior: PriorOrder }
  | { kind: 'unknown'; productIds: number[] }
  | { kind: 'short'; products: { productId: number; requested: number; available: number }[] }
  /** D1 has seen a fence at or above ours: acquire again with `fenceFloor: floor` and retry. */
  | { kind: 'stale'; floor: number }
  | { kind: 'refused'; cause: unknown };

/** Writes the order; on a refused batch, reads why (under the same locks, so the answer holds). */
export async function placeOrder(db: D1Database, order: NewOrder): Promise<Placed> {
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
    db.prepare(`SELECT id, stock, fence FROM products WHERE id IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(ids)),
    findStatement(db, order.idempotencyKey, order.cartId),
  ]);
  const rows = new Map(((products?.results ?? []) as { id: number; stock: number; fence: number }[]).map((p) => [p.id, p]));
  const before = prior((found?.results ?? []) as OrderRow[]);
  // Our own batch committed but its answer was lost on the way back: it is placed.
  if (before?.body.orderId === order.orderId) return { kind: 'placed', body: before.body, stock: before.lines.map((l) => ({ productId: l.productId, stock: rows.get(l.productId)?.stock ?? 0 })) };
  if (before) return { kind: 'exists', prior: before };
  const unknown = ids.filter((id) => !rows.has(id));
  if (unknown.length) return { kind: 'unknown', productIds: unknown };
  const short = order.lines.filter((l) => rows.get(l.productId)!.stock < l.quantity).map((l) => ({ productId: l.productId, requested: l.quantity, available: rows.get(l.productId)!.stock }));
  if (short.length) return { kind: 'short', products: short };
  if (order.lines.some((l) => rows.get(l.productId)!.fence >= l.fence)) return { kind: 'stale', floor: Math.max(...order.lines.map((l) => rows.get(l.productId)!.fence)) };
  return { kind: 'refused', cause: failure };
}
