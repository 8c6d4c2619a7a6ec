/**
 * `POST /checkout` with an `Idempotency-Key` header: turns the session's cart into an order.
 *
 * 1. The key (1..100 visible ASCII characters) is scoped to the visitor (`user:<id>`, else the
 *    session's handle) and hashed: one visitor can never claim, or read, another's order by key.
 *    (So a retry across a login, which changes the scope, counts as a new request.) The request's
 *    fingerprint is a hash of the cart's lines.
 * 2. The key is claimed (SET NX GET PX, edge-redis/idempotency) in the same round trip as a first
 *    try at every product's lock (`acquireAll`, edge-redis/lock); a busy lock is then waited for in a fixed
 *    (sorted) order, so two checkouts never deadlock. A duplicate in progress gets 409 + Retry-After
 *    (unless D1 already has its order: then that order); a finished one gets the same 201 again with
 *    `Idempotent-Replayed: true`; the same key with a different cart gets 422. Only a placed order is
 *    stored for replay: a refusal (409, 422) leaves the key free, since no order exists under it.
 * 3. ONE D1 batch (a transaction) decrements each stock, checks the lock's fence, writes the order
 *    and its lines, whatever the cart's size (./orders.ts). A short stock, a stale fence or a
 *    vanished product makes a statement fail, so nothing of the batch applies; a second read tells
 *    which (409 naming the short products, 422 for unknown ones). D1 is the store of record for
 *    what Redis may have forgotten: `orders.idempotency_key` and `orders.cart_id` are UNIQUE, so a
 *    retry after Redis lost the key's record, or with a new key after the cart could not be emptied,
 *    finds the order already placed instead of placing it again; and a fence D1 has already passed
 *    (Redis forgot the fence counter: a restart, an eviction) is repaired at once: the locks are
 *    taken again above D1's fence (`fenceFloor`) and the batch retried, at most twice.
 * 4. After the commit, in ONE round trip: the locks' release, the stored response, a ZINCRBY per
 *    product on the best sellers, the product cache entries' invalidation (and the list pages', by
 *    the `products` tag), the inventory event and the session's save (the cart emptied). A failure
 *    there is logged and the answer is still 201: the order is in D1, and everything in that trip
 *    is repairable (a retry finds the order by its key or its cart; the leaderboard can be rebuilt
 *    from order_items; a cache entry expires; the locks' leases run out).
 *
 * An empty cart is 422 (`unprocessable`), not 400: the request is well formed, the state it acts on
 * is what cannot be processed. A retry whose original already emptied the cart is still replayed.
 *
 * Round trips (Redis), happy path with warm scripts: per-IP check; session load; claim + lock tries
 * (SET, EVALSHA × products); after-commit writes with the session save. 4, plus the D1 batch. After
 * Redis forgot the fence counter: one more (locks again) and one more D1 batch, once per product.
 */
import { Hono } from 'hono';
import { z } from 'zod';
import type { AppEnv } from '../env.ts';
import { AppError } from '../errors.ts';
import { fingerprint, type Claim, type StoredResponse } from 'edge-redis/idempotency';
import { acquireAll, releaseAll, type Lock } from 'edge-redis/lock';
import { publishJson } from 'edge-redis/pubsub';
import { CHECKOUT_IDEMPOTENCY, type Services } from '../services.ts';
import { MAX_LINES, MAX_QUANTITY } from './cart.ts';
import { inventoryChannel, type InventoryEvent } from './events.ts';
import { doc, validate } from './openapi.ts';
import { findOrder, placeOrder, type Line, type Placed } from './orders.ts';
import { productKey } from './products.ts';

/** A product's lock lease: far longer than one D1 batch; the fence covers a holder paused past it. */
export const LOCK_LEASE_MS = 10_000;
/** How long a checkout waits for busy product locks before answering 409. */
export const LOCK_WAIT_MS = 5_000;
/** How long a claimed key blocks duplicates if its request dies before finishing. */
export const PENDING_MS = CHECKOUT_IDEMPOTENCY.pendingMs;
/** How long a placed order is replayed for its key. */
export const REPLAY_MS = CHECKOUT_IDEMPOTENCY.ttlMs;
/** Order batches per checkout: the first, and up to two after a fence D1 had already passed. */
const FENCE_TRIES = 3;

/** The lock of one product. */
export const productLock = (productId: number) => `product:${productId}`;

const OrderItem = z.object({ productId: z.number().int(), quantity: z.number().int(), price: z.number(), lineTotal: z.number() });
const Order = z.object({ orderId: z.string(), items: z.array(OrderItem), total: z.number() });
export type OrderBody = z.infer<typeof Order>;

const IdempotencyHeader = z.object({
  'idempotency-key': z
    .string({ error: 'Required: a unique key per order, e.g. a UUID' })
    .regex(/^[\x21-\x7E]{1,100}$/, '1 to 100 visible ASCII characters')
    .describe('A unique key per order (e.g. a UUID): retrying with the same key never orders twice'),
});

/**
 * Drops the cached copies that show the stock just changed: each product's entry (the key of
 * src/functions/products.ts) and, through the `products` tag, every cached list page, since pages
 * show stock too. Trade-off: every order retires the list pages; a shop whose lists can live with a
 * stale stock figure could skip the tag (the inventory events carry the live numbers).
 */
function invalidateProducts({ cache }: Services, ids: readonly number[]): Promise<unknown>[] {
  return [...ids.map((id) => cache.invalidate(productKey(id))), cache.invalidateTag('products')];
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

checkout.post('/', doc({
  tags: ['checkout'], summary: 'Order what is in the cart', security: 'session',
  description: 'No body (or `{}`): the order is the session\'s cart. Retry with the same `Idempotency-Key` after any failure: a placed order is answered again (`Idempotent-Replayed: true`), never placed twice. The cart is emptied.',
  responses: {
    201: { description: 'The order (also for a replayed key)', body: Order },
    409: { description: 'Not enough stock (`products` lists each short line), the same key still in progress, or products busy (Retry-After)' },
    422: { description: 'The cart is empty or holds products that no longer exist, or the key was used for a different cart' },
  },
}), validate('header', IdempotencyHeader), async (c) => {
  const clientKey = c.req.valid('header')['idempotency-key'];
  await checkEmptyBody(c.req.text());
  const env = c.env;
  const s = c.var.services;
  const idem = s.checkoutKeys;
  const session = c.get('session');
  /**
   * A placed order's answer. The cart is emptied and the session saved NOW, inside the handler
   * (with `alongside`, in the same round trip), so that a failing save is logged, not turned into a
   * 503: the order is in D1 whatever Redis does, and a retry finds it there by key or by cart.
   */
  const answer = async (body: OrderBody, replayed: boolean, alongside: [string, Promise<unknown>][] = []) => {
    session.delete('cart');
    session.delete('cartId');
    const steps: [string, Promise<unknown>][] = [...alongside, ['session', session.save()]];
    const results = await Promise.allSettled(steps.map(([, p]) => p));
    const failed = [...new Set(results.flatMap((r, i) => (r.status === 'rejected' ? [`${steps[i]![0]} (${failureName(r.reason)})`] : [])))];
    if (failed.length) console.error(`[checkout] order ${body.orderId} placed, but after-commit steps failed (repairable): ${failed.join('; ')}`);
    if (replayed) c.header('Idempotent-Replayed', 'true');
    return c.json(body, 201);
  };
  const replay = (response: StoredResponse) => answer(response.body as OrderBody, true);

  const [rawCart, rawCartId, user, handle] = await Promise.all([session.get('cart'), session.get('cartId'), session.getUser(), session.handle()]);
  const lines = cartLines(rawCart);
  if (lines === null) throw new AppError('unprocessable', { detail: 'The cart holds a line that is not valid; empty it with DELETE /cart/items/:productId and add the products again.' });
  if (lines.length > MAX_LINES) throw new AppError('unprocessable', { detail: `A cart holds at most ${MAX_LINES} different products.` });
  const cartId = typeof rawCartId === 'string' && /^[\w-]{1,64}$/.test(rawCartId) ? rawCartId : null;
  const scope = user !== undefined ? `user:${user}` : handle !== undefined ? `session:${handle}` : undefined;
  const key = scope === undefined ? undefined : await fingerprint(['checkout', scope, clientKey]);
  const fromD1 = async (k: string, cart: string | null) => {
    try {
      return await findOrder(env.DB, k, cart);
    } catch (cause) {
      throw new AppError('unavailable', { detail: 'The order could not be looked up; retry with the same Idempotency-Key.', headers: { 'retry-after': '1' }, cause });
    }
  };

  if (lines.length === 0 || key === undefined) {
    // A retry of an order that already emptied the cart: answer it again.
    if (key !== undefined) {
      const record = await idem.peek(key);
      if (record?.state === 'completed') return replay(record.response);
      const prior = await fromD1(key, null);
      if (prior) return replay({ status: 201, body: prior.body });
    }
    throw new AppError('unprocessable', { detail: 'The cart is empty: add products with POST /cart/items first.' });
  }

  const fp = await lineFingerprint(lines);
  const resources = lines.map((l) => productLock(l.productId));
  const stop = new AbortController();
  const lockAll = (fenceFloor = 0) => acquireAll(s.locks, resources, { leaseMs: LOCK_LEASE_MS, waitMs: LOCK_WAIT_MS, signal: stop.signal, ...(fenceFloor > 0 ? { fenceFloor } : {}) });
  const claiming = idem.begin(key, fp);
  // Same tick as the claim: one round trip for the claim and every lock's first try.
  const locking = lockAll();
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
    if (claim.state === 'completed') return replay(claim.response);
    // In progress, or a claim whose request placed the order and then lost its after-commit trip.
    const prior = await fromD1(key, null);
    if (prior) return replay({ status: 201, body: prior.body });
    throw busy('A checkout with this Idempotency-Key is still in progress; retry shortly with the same key.');
  }

  const token = claim.token;
  const giveBack = (held: readonly Lock[]) =>
    Promise.all([releaseAll(held), idem.release(key, token).catch((err: unknown) => console.error(`[checkout] could not free an idempotency key: ${failureName(err)}`))]);

  let held: Lock[] | null;
  try {
    held = await locking;
  } catch (err) {
    await giveBack([]);
    throw err; // LockError unavailable: 503
  }
  const orderId = crypto.randomUUID();
  const userId = user !== undefined && /^[1-9]\d{0,15}$/.test(user) ? Number(user) : null;
  let placed: Placed | undefined;
  for (let attempt = 1; held; attempt++) {
    const fences = new Map(held.map((l) => [l.resource, l.fence]));
    try {
      placed = await placeOrder(env.DB, { orderId, idempotencyKey: key, cartId, userId, createdAt: Date.now(), lines: lines.map((l) => ({ ...l, fence: fences.get(productLock(l.productId))! })) });
    } catch (cause) {
      await giveBack(held);
      throw new AppError('unavailable', { detail: 'The order could not be written; retry with the same Idempotency-Key.', headers: { 'retry-after': '1' }, cause });
    }
    if (placed.kind !== 'stale' || attempt >= FENCE_TRIES) break;
    // D1 has seen a fence at or above ours: Redis forgot its counter (or a lock). The same locks
    // again, above D1's fence; the release and the new tries leave in one round trip.
    const again = Promise.all([releaseAll(held), lockAll(placed.floor)]);
    try {
      held = (await again)[1];
    } catch (err) {
      await giveBack([]);
      throw err;
    }
  }
  if (!held || !placed) {
    await giveBack([]);
    throw busy('Another checkout is updating these products; retry shortly with the same Idempotency-Key.');
  }

  switch (placed.kind) {
    case 'exists': {
      const { prior } = placed;
      const same = (await lineFingerprint(prior.lines)) === fp;
      // Under this key with this cart, or from this cart with the same lines: that order again.
      if (same) return answer(prior.body, true, [['locks', releaseAll(held)], ['idempotency', prior.by === 'key' ? idem.complete(key, fp, { status: 201, body: prior.body }) : idem.release(key, token)]]);
      await giveBack(held);
      if (prior.by === 'key') throw reused();
      // This cart was ordered and has changed since: which of its lines the shopper still wants is
      // theirs to say, so it is emptied (saved after the handler, as for any 4xx) and never ordered twice.
      session.delete('cart');
      session.delete('cartId');
      throw new AppError('conflict', {
        detail: `This cart was already ordered (order ${prior.body.orderId}) and has changed since; it is emptied now: add what you still want and check out again.`,
        extensions: { orderId: prior.body.orderId, emptied: true },
      });
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
    case 'stale':
    case 'refused':
      await giveBack(held);
      console.error(`[checkout] order batch refused without a short stock (${placed.kind === 'stale' ? `fences still behind D1 after ${FENCE_TRIES} tries` : failureName(placed.cause)})`);
      throw busy('The stock changed while the order was being placed; retry with the same Idempotency-Key.');
    case 'placed':
      break;
  }

  const response = { status: 201, body: placed.body };
  const event: InventoryEvent = { type: 'inventory.changed', items: placed.stock, at: Date.now() };
  const board = s.bestSellers;
  // Everything below, the session's save included, leaves in ONE round trip: all of it is issued in this task.
  return answer(placed.body, false, [
    ['locks', releaseAll(held)],
    ['idempotency', idem.complete(key, fp, response)],
    ...lines.map((l): [string, Promise<unknown>] => ['leaderboard', board.increment(String(l.productId), l.quantity)]),
    ...invalidateProducts(s, lines.map((l) => l.productId)).map((p): [string, Promise<unknown>] => ['cache', p]),
    ['event', publishJson(s.redis, inventoryChannel(s), event)],
  ]);
});

export default checkout;
