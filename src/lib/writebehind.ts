/**
 * Write-behind through a Redis Stream and a consumer group: requests `enqueue` cheaply (one XADD),
 * a scheduled job `drain`s batches into the real store and acknowledges them only once stored, so a
 * flush that fails half way loses nothing and a poison entry ends in a dead-letter stream.
 *
 * Optional tallies make the queue countable exactly: an entry enqueued with `tally: f` adds 1 to
 * field `f` of a hash in the same script, and the ack that retires the entry takes it off again.
 * A reader that wants "store + not flushed yet" without counting anything twice calls
 * {@link WriteBehind.snapshot} FIRST and then reads the store, subtracting the store's records of
 * entries the snapshot still counts: those whose id is in `inFlight`, and those applied by batches
 * numbered above `seq` (claimed after the snapshot). That needs the store to keep, per applied
 * entry, its id and its batch `seq` (see src/functions/views.ts for the SQL).
 *
 * When Redis forgets (./writebehind-scripts.ts has the details): what is in flight is read from the
 * consumer group's own pending list, inside the stream key, so it cannot be lost apart from the
 * entries; the tally knows which entries it counts, so an ack never takes off what a lost tally
 * never counted; the batch sequence never goes back (Redis time in µs as its floor). So whatever
 * subset of the stream, tally and seq keys is gone, the read is never below the store and never
 * counts an entry twice. What may be lost: entries not yet drained (with the stream), and their
 * count until they are drained (with the tally).
 *
 * Round trips: `enqueue` 1; `snapshot` 1 (read-only script); `drain` batches + 1 (the claim of the
 * next batch travels with the ack of the last, in one request, on an auto-pipelining or task-batched
 * client). Every operation is one Lua script, so each step is atomic. A drain goes on until the
 * stream is empty, `budgetMs` is spent or `maxBatches` are done, whichever comes first.
 *
 * Keys (`stream` is `keys.slotted('wb', name)`: all of them share its hash tag, one Cluster slot):
 * `<stream>` the queue (one consumer group per stream: an ack deletes the entry); `<stream>:dlq`
 * dead letters (fields + `_id`, `_deliveries`); `<stream>:tally`; `<stream>:seq`.
 *
 * Failure policy: fail closed, loudly. Redis failures reject with a `WriteBehindError` (`unavailable`); the
 * caller decides (a page view may be dropped with a log line, an order may not). A handler that
 * throws stops the drain: its batch stays pending, is reclaimed after `claimIdleMs` by a later
 * drain and, after `maxDeliveries` deliveries, goes to the dead-letter stream whole. So a handler
 * must be idempotent (an entry may be handed over again after a crash between the store's commit
 * and the ack) and should skip, not throw on, entries it can never apply.
 *
 * Trimming: `maxLen` caps the backlog (acked entries are already gone): past it the oldest entries
 * are dropped, out of their tally too. Size it above the backlog of the longest drain outage you accept.
 *
 * @example
 * const views = createWriteBehind({ redis, keys, name: 'views' });
 * c.executionCtx.waitUntil(views.enqueue({ p: '42' }, { tally: '42' }));
 * // in scheduled():
 * await views.drain({ group: 'd1', consumer: 'cron', handler: (b) => store(b.seq, b.entries) });
 */
import { WriteBehindError, type DrainProgress } from './errors.ts';
import type { KeySchema } from './keys.ts';
import type { RedisCommands } from './redis.ts';
import { runScript } from './script.ts';
import { jsonReply, wholeNumber } from './util.ts';
import { SCRIPTS } from './writebehind-scripts.ts';

export { SCRIPTS, WriteBehindError };

/** The commands this module sends (all scripts). */
export type WriteBehindRedis = RedisCommands<'evalsha' | 'eval' | 'evalshaRo' | 'evalRo'>;

/** One stream entry as the handler sees it. */
export interface StreamEntry {
  /** The stream id (`<ms>-<n>`): unique, so a store can remember which entries it applied. */
  id: string;
  /** What was enqueued (the reserved `_t` tally field removed). */
  fields: Record<string, string>;
  /** How many times it has been delivered, this time included (1 = first). */
  deliveries: number;
  /** The tally field it counts in, if any. */
  tally: string | undefined;
}

/** One handler call's worth of entries. */
export interface Batch {
  /** Increases with every batch claimed, never going back even after Redis lost it (Redis time in µs as its floor); store it with each applied entry (see {@link WriteBehind.snapshot}). */
  seq: number;
  entries: StreamEntry[];
}

export interface DrainOptions {
  /** Consumer group, created (MKSTREAM) on first use. */
  group: string;
  /** This consumer's name: use a fixed one (each distinct name stays listed in the group). */
  consumer: string;
  /** Stores a batch. Resolving means stored: only then are its entries acked. */
  handler: (batch: Batch) => Promise<void> | void;
  /** Entries per handler call. @default 100 */
  batchSize?: number;
  /** Handler calls per drain at most. @default Infinity (until empty or out of budget) */
  maxBatches?: number;
  /**
   * No batch is claimed once this many ms have passed since the drain began (the batch in hand is
   * still stored and acked): keep it well inside the scheduler's limit (a cron run's CPU and wall
   * time). @default 20_000
   */
  budgetMs?: number;
  /** An entry delivered more often than this goes to `<stream>:dlq`. @default 5 */
  maxDeliveries?: number;
  /** Pending entries idle this long (a crashed or failed drain's) are reclaimed, ms. @default 60_000 */
  claimIdleMs?: number;
  /** Stops between batches and before acking (e.g. a lost lock); what is unacked is redelivered later. */
  signal?: AbortSignal;
}

export interface DrainReport extends DrainProgress {
  /** Handler calls that succeeded. */
  batches: number;
  /** Entries acked (stored). */
  acked: number;
  /** Ids moved to the dead-letter stream by this drain. */
  deadLettered: string[];
  /** Entries handed to the handler more than once (reclaimed). */
  redelivered: number;
}

/** What {@link WriteBehind.snapshot} answers for each tally field. */
export interface Pending {
  /** Entries enqueued with this tally field and not acked yet. */
  count: number;
  /** Those of them delivered to a drain (maybe already stored). */
  inFlight: string[];
}

export interface WriteBehind {
  /** XADD (MAXLEN ~) the fields, and count the entry in `tally` if given. 1 round trip; resolves the entry id. */
  enqueue(fields: Readonly<Record<string, string | number>>, options?: { tally?: string }): Promise<string>;
  /** Drains until the stream is empty, the budget is spent or `maxBatches` are done. Rejects with {@link WriteBehindError}: `handler` (with its `report`) or `unavailable`. */
  drain(options: DrainOptions): Promise<DrainReport>;
  /** Atomically: the last batch `seq` and, per tally field, the unacked count and in-flight ids. 1 round trip. */
  snapshot(tallies: readonly string[]): Promise<{ seq: number; pending: Pending[] }>;
  /** The queue's keys (for inspecting the backlog or the dead letters with plain commands). */
  readonly keys: { stream: string; dlq: string; tally: string; seq: string };
}

export interface WriteBehindOptions {
  redis: WriteBehindRedis;
  keys: KeySchema;
  /** The queue's name: its stream is `keys.slotted('wb', name)`, with `:dlq`, `:tally`, `:seq` beside it. */
  name: string;
  /** Approximate cap on the stream's length. @default 100_000 */
  maxLen?: number;
  /** Approximate cap on the dead-letter stream's length. @default 10_000 */
  dlqMaxLen?: number;
}

const RESERVED = /^_/;

/** cjson writes `{}` for an empty list. */
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

function entryOf(row: unknown): StreamEntry {
  const [id, flat, deliveries] = list(row);
  const fields: Record<string, string> = {};
  let tally: string | undefined;
  const kv = list(flat);
  for (let i = 0; i + 1 < kv.length; i += 2) {
    const k = String(kv[i]);
    if (k === '_t') tally = String(kv[i + 1]);
    else fields[k] = String(kv[i + 1]);
  }
  return { id: String(id), fields, deliveries: Number(deliveries), tally };
}

/**
 * A write-behind queue on one stream. Does no I/O until called.
 *
 * @example
 * const q = createWriteBehind({ redis, keys, name: 'views', maxLen: 100_000 });
 * await q.enqueue({ p: 42 }, { tally: '42' });
 */
export function createWriteBehind({ redis, keys, name, maxLen = 100_000, dlqMaxLen = 10_000 }: WriteBehindOptions): WriteBehind {
  const stream = keys.slotted('wb', name);
  wholeNumber('write-behind: maxLen', maxLen);
  wholeNumber('write-behind: dlqMaxLen', dlqMaxLen);
  const k = { stream, dlq: `${stream}:dlq`, tally: `${stream}:tally`, seq: `${stream}:seq` };

  return {
    keys: k,
    async enqueue(fields, { tally } = {}) {
      const flat: string[] = [];
      for (const [name, value] of Object.entries(fields)) {
        if (!name || RESERVED.test(name)) throw new TypeError(`write-behind: field "${name}" is empty or reserved (leading "_")`);
        flat.push(name, String(value));
      }
      if (flat.length === 0) throw new TypeError('write-behind: an entry needs at least one field');
      if (tally === '') throw new TypeError('write-behind: tally must be a non-empty string');
      try {
        return String(await runScript<unknown>(redis, SCRIPTS.enqueue, [k.stream, k.tally], [maxLen, tally ?? '', ...flat]));
      } catch (cause) {
        throw new WriteBehindError('unavailable', 'enqueue', { cause });
      }
    },

    async drain({ group, consumer, handler, batchSize = 100, maxBatches = Infinity, budgetMs = 20_000, maxDeliveries = 5, claimIdleMs = 60_000, signal }) {
      const until = Date.now() + budgetMs;
      wholeNumber('write-behind: batchSize', batchSize);
      if (maxBatches !== Infinity) wholeNumber('write-behind: maxBatches', maxBatches);
      wholeNumber('write-behind: budgetMs', budgetMs, { min: 0 });
      wholeNumber('write-behind: maxDeliveries', maxDeliveries);
      wholeNumber('write-behind: claimIdleMs', claimIdleMs, { min: 0 });
      const report: DrainReport = { batches: 0, acked: 0, deadLettered: [], redelivered: 0 };
      const claim = () =>
        runScript<unknown>(redis, SCRIPTS.claim, [k.stream, k.tally, k.dlq, k.seq], [group, consumer, batchSize, claimIdleMs, maxDeliveries, dlqMaxLen]).then((reply) => {
          const [seq, rows, dead] = list(jsonReply(reply));
          return { seq: Number(seq), entries: list(rows).map(entryOf), dead: list(dead).map(String) };
        });
      const ack = (ids: string[]) => runScript<number>(redis, SCRIPTS.ack, [k.stream, k.tally], [group, ...ids]);
      const redisFailure = (cause: unknown) => new WriteBehindError('unavailable', 'drain', { cause, report });

      let next: ReturnType<typeof claim> | undefined = claim();
      while (next) {
        let got: Awaited<ReturnType<typeof claim>>;
        try {
          got = await next;
        } catch (cause) {
          throw redisFailure(cause);
        }
        report.deadLettered.push(...got.dead);
        if (got.entries.length === 0 || signal?.aborted) break;
        try {
          await handler({ seq: got.seq, entries: got.entries });
        } catch (cause) {
          throw new WriteBehindError('handler', 'drain', { cause, report });
        }
        report.batches++;
        report.redelivered += got.entries.filter((e) => e.deliveries > 1).length;
        if (signal?.aborted) break;
        // Issued in the same tick: the ack and the next claim share one HTTP request, and Redis runs
        // them in that order, so the next claim never sees this batch as pending.
        const acked = ack(got.entries.map((e) => e.id));
        next = report.batches < maxBatches && got.entries.length === batchSize && Date.now() < until ? claim() : undefined;
        next?.catch(() => undefined); // awaited on the next turn; this keeps a failed ack from leaving it unobserved
        try {
          report.acked += await acked;
        } catch (cause) {
          throw redisFailure(cause);
        }
      }
      return report;
    },

    async snapshot(tallies) {
      try {
        const [seq, rows] = list(jsonReply(await runScript<unknown>(redis, SCRIPTS.snapshot, [k.stream, k.tally, k.seq], [...tallies])));
        return {
          seq: Number(seq),
          pending: tallies.map((_, i) => {
            const [count, ids] = list(list(rows)[i]);
            return { count: Number(count ?? 0), inFlight: list(ids).map(String) };
          }),
        };
      } catch (cause) {
        throw new WriteBehindError('unavailable', 'snapshot', { cause });
      }
    },
  };
}
