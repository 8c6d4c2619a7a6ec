/**
 * Page views, write-behind: a view is one entry on a Redis Stream, tallied per product
 * (edge-redis/writebehind); the cron (./scheduled.ts) drains the stream into D1 `product_views` in
 * batches; `GET /products/:id/views` adds what D1 holds and what is not flushed yet, exactly.
 *
 * Exactness: D1 records every applied entry (`applied_view_entries`: id, product, batch seq) in the
 * same transaction that adds it to `product_views`, so a batch handed over again after a crash
 * between the D1 commit and the ack counts nothing twice. A reader takes the Redis snapshot FIRST
 * (pending count, the entries in flight, the last batch seq) and then asks D1 for product_views
 * minus the entries the snapshot still counts: in flight, or applied by a batch claimed after it.
 */
import { classifyRedisError } from 'edge-redis/redis';
import type { Batch, DrainOptions, DrainReport, WriteBehind } from 'edge-redis/writebehind';
import { positiveInt, services } from '../services.ts';

/**
 * How the cron drains (see DrainOptions for each): until the stream is empty, within a budget well
 * inside a cron run's limits. `maxBatches` bounds the subrequests of one run (each batch is one
 * Redis request and one D1 batch). `npm run bench:drain` measures what these settings clear.
 * The vars VIEW_DRAIN_BATCH_SIZE, VIEW_DRAIN_MAX_BATCHES and VIEW_DRAIN_BUDGET_MS override the three.
 */
export const VIEW_DRAIN = { group: 'd1', consumer: 'cron', batchSize: 500, maxBatches: 400, budgetMs: 20_000, maxDeliveries: 10, claimIdleMs: 60_000 } as const;

/** {@link VIEW_DRAIN} with the env's overrides. */
export function viewDrain(env: Env): Omit<DrainOptions, 'handler'> {
  return {
    ...VIEW_DRAIN,
    batchSize: positiveInt(env.VIEW_DRAIN_BATCH_SIZE, 'VIEW_DRAIN_BATCH_SIZE', VIEW_DRAIN.batchSize),
    maxBatches: positiveInt(env.VIEW_DRAIN_MAX_BATCHES, 'VIEW_DRAIN_MAX_BATCHES', VIEW_DRAIN.maxBatches),
    budgetMs: positiveInt(env.VIEW_DRAIN_BUDGET_MS, 'VIEW_DRAIN_BUDGET_MS', VIEW_DRAIN.budgetMs),
  };
}

/**
 * How long D1 remembers an applied entry id. An entry acked is never handed over again; one left
 * unacked (crash, then a drain outage) longer than this could be counted twice.
 */
export const APPLIED_RETENTION_MS = 7 * 86_400_000;

/** The views queue of this env (src/services.ts builds it). */
export const viewQueue = (env: Env): WriteBehind => services(env).views;

/** Counts one view of product `id`: 1 round trip, meant for `waitUntil`. Never rejects: a lost view is logged. */
export async function countView(env: Env, id: number): Promise<void> {
  try {
    await viewQueue(env).enqueue({ p: id }, { tally: String(id) });
  } catch (err) {
    // Only the kind of failure: the client's message quotes the command and its keys.
    console.warn(`[views] a view was not counted (${classifyRedisError(err)})`);
  }
}

/**
 * The D1 side of one batch, in one `DB.batch` (one transaction): adds the entries not applied yet to
 * `product_views`, records them with the batch seq, and forgets ids older than the retention.
 * Entries of products that no longer exist are recorded and dropped (never a reason to fail).
 */
export async function applyViews(db: D1Database, batch: Batch, now = Date.now()): Promise<void> {
  const seen = new Set<string>();
  const rows: { id: string; p: number }[] = [];
  for (const e of batch.entries) {
    const p = Number(e.fields['p']);
    if (!seen.has(e.id) && Number.isSafeInteger(p) && p > 0) rows.push({ id: e.id, p });
    seen.add(e.id);
  }
  if (rows.length < batch.entries.length) console.warn(`[views] ${batch.entries.length - rows.length} malformed or repeated entries skipped`);
  const entries = JSON.stringify(rows);
  await db.batch([
    db
      .prepare(
        `INSERT INTO product_views (product_id, views)
         SELECT e.p, count(*) FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.p') AS p FROM json_each(?1)) AS e
         WHERE e.id NOT IN (SELECT entry_id FROM applied_view_entries) AND e.p IN (SELECT id FROM products)
         GROUP BY e.p
         ON CONFLICT (product_id) DO UPDATE SET views = views + excluded.views`,
      )
      .bind(entries),
    db
      .prepare(
        `INSERT INTO applied_view_entries (entry_id, applied_at, product_id, seq)
         SELECT json_extract(value, '$.id'), ?2, json_extract(value, '$.p'), ?3 FROM json_each(?1) WHERE true
         ON CONFLICT (entry_id) DO NOTHING`,
      )
      .bind(entries, now, batch.seq),
    // Stream ids start with their ms timestamp (13 digits until 2286), so this is a range on the key.
    db.prepare('DELETE FROM applied_view_entries WHERE entry_id < ?1').bind(`${now - APPLIED_RETENTION_MS}-`),
  ]);
}

/** One cron run: drain the views stream into D1. Rejects with WriteBehindError (see its `report`). */
export function flushViews(env: Env, overrides: Partial<Omit<DrainOptions, 'handler'>> = {}): Promise<DrainReport> {
  return viewQueue(env).drain({ ...viewDrain(env), ...overrides, handler: (batch) => applyViews(env.DB, batch) });
}

/**
 * Exact views of a product: D1 plus what is not flushed yet, or `null` for an unknown product.
 * 1 Redis round trip (read-only script), then 1 D1 query; the order matters (see the file comment).
 * Rejects with WriteBehindError when Redis fails.
 */
export async function readViews(env: Env, id: number): Promise<number | null> {
  const { seq, pending } = await viewQueue(env).snapshot([String(id)]);
  const mine = pending[0] ?? { count: 0, inFlight: [] };
  const row = await env.DB.prepare(
    `SELECT coalesce(v.views, 0) AS flushed,
       (SELECT count(*) FROM applied_view_entries a
        WHERE a.product_id = p.id AND (a.seq > ?2 OR a.entry_id IN (SELECT value FROM json_each(?3)))) AS unsettled
     FROM products p LEFT JOIN product_views v ON v.product_id = p.id
     WHERE p.id = ?1`,
  )
    .bind(id, seq, JSON.stringify(mine.inFlight))
    .first<{ flushed: number; unsettled: number }>();
  return row ? row.flushed - row.unsettled + mine.count : null;
}
