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
 * Round trips: `enqueue` 1; `snapshot` 1 (read-only script); `drain` batches + 1 (the claim of the
 * next batch travels with the ack of the last, in one request, on an auto-pipelining or task-batched
 * client). Every operation is one Lua script, so each step is atomic.
 *
 * Keys (give `stream` a hash tag, e.g. `keys.slotted('wb', 'views')`, so all share a Cluster slot):
 * `<stream>` the queue; `<stream>:dlq` dead letters (fields + `_id`, `_deliveries`); `<stream>:tally`
 * hash field → entries not yet acked; `<stream>:seq` batch counter; `<stream>:inflight` hash id →
 * tally field of every delivered, unacked entry.
 *
 * Failure policy: fail closed, loudly. Redis failures reject with {@link WriteBehindError}; the
 * caller decides (a page view may be dropped with a log line, an order may not). A handler that
 * throws stops the drain: its batch stays pending, is reclaimed after `claimIdleMs` by a later
 * drain and, after `maxDeliveries` deliveries, goes to the dead-letter stream whole. So a handler
 * must be idempotent (an entry may be handed over again after a crash between the store's commit
 * and the ack) and should skip, not throw on, entries it can never apply.
 *
 * Trimming: `maxLen` bounds memory with XADD MAXLEN ~. Entries trimmed before they were read are
 * lost (their tally stays); size it above the backlog of the longest drain outage you accept.
 *
 * @example
 * const views = createWriteBehind({ redis, stream: keys.slotted('wb', 'views') });
 * c.executionCtx.waitUntil(views.enqueue({ p: '42' }, { tally: '42' }));
 * // in scheduled():
 * await views.drain({ group: 'd1', consumer: 'cron', handler: (b) => store(b.seq, b.entries) });
 */
import type { RedisCommands } from './redis.ts';
import { runScript, type LuaScript } from './script.ts';

/** The commands this module sends (all scripts). */
export type WriteBehindRedis = RedisCommands<'evalsha' | 'eval' | 'evalshaRo' | 'evalRo'>;

// Shared Lua helpers: drop one delivered entry's bookkeeping and its tally unit.
const RELEASE = `local function untally(f)
  if f and f ~= '' and redis.call('HINCRBY', KEYS[3], f, -1) <= 0 then redis.call('HDEL', KEYS[3], f) end
end
local function release(id)
  local f = redis.call('HGET', KEYS[5], id)
  if f then redis.call('HDEL', KEYS[5], id) end
  return f
end
`;

/** Every script with its SHA1, pinned (and checked in the tests) so calls are EVALSHA without hashing at run time. */
export const SCRIPTS = {
  // KEYS: stream, tally. ARGV: maxLen, tally field ('' none), field/value pairs.
  enqueue: {
    src: `local args = {KEYS[1], 'MAXLEN', '~', ARGV[1], '*'}
if ARGV[2] ~= '' then args[#args + 1] = '_t'; args[#args + 1] = ARGV[2] end
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call('XADD', unpack(args))
if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[2], 1) end
return id`,
    sha: 'ccb64a74925fbf3b44296e1c9fcd32daa43ed665',
  },
  // KEYS: stream, dlq, tally, seq, inflight. ARGV: group, consumer, count, min idle ms, max deliveries, dlq maxLen.
  // Creates the group if missing; reclaims idle entries (dead-lettering those delivered too often,
  // releasing those trimmed away), tops the batch up with new ones, numbers it, and records each
  // entry's tally field in `inflight`. Returns JSON {seq, batch: [[id, flat fields, deliveries]], dead: [ids]}.
  claim: {
    src: `${RELEASE}local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local count, maxDel = tonumber(ARGV[3]), tonumber(ARGV[5])
local made = redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
if type(made) == 'table' and made.err and not string.find(made.err, 'BUSYGROUP', 1, true) then return redis.error_reply(made.err) end
local function field(flat)
  for i = 1, #flat, 2 do if flat[i] == '_t' then return flat[i + 1] end end
  return ''
end
local batch, dead = {}, {}
local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], '0-0', 'COUNT', count)
for _, id in ipairs(claimed[3] or {}) do untally(release(id)) end
for _, e in ipairs(claimed[2]) do
  if type(e) == 'table' then
    local id = e[1]
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    local n = (p[1] and tonumber(p[1][4])) or 1
    if n > maxDel then
      local args = {KEYS[2], 'MAXLEN', '~', ARGV[6], '*', '_id', id, '_deliveries', n}
      for _, v in ipairs(e[2]) do args[#args + 1] = v end
      redis.call('XADD', unpack(args))
      redis.call('XACK', stream, group, id)
      release(id)
      untally(field(e[2]))
      dead[#dead + 1] = id
    else
      batch[#batch + 1] = {id, e[2], n}
    end
  end
end
if #batch < count then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #batch, 'STREAMS', stream, '>')
  if r then for _, e in ipairs(r[1][2]) do batch[#batch + 1] = {e[1], e[2], 1} end end
end
local seq = 0
if #batch > 0 then
  seq = redis.call('INCR', KEYS[4])
  for _, b in ipairs(batch) do redis.call('HSET', KEYS[5], b[1], field(b[2])) end
end
return cjson.encode({seq, batch, dead})`,
    sha: '4359f264ad876fd31493a28d009cc429fac9386e',
  },
  // KEYS: stream, -, tally, -, inflight. ARGV: group, ids. Retires each entry this call acks (an
  // entry another drain acked first is left alone). Returns how many were acked.
  ack: {
    src: `${RELEASE}local n = 0
for i = 2, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    n = n + 1
    untally(release(ARGV[i]))
  end
end
return n`,
    sha: '406987e300c233de8cb51f6f458eb9399537c54b',
  },
  // KEYS: tally, seq, inflight. ARGV: tally fields. Returns JSON {seq, [[count, [in-flight ids]] per field]}.
  snapshot: {
    src: `local want, out = {}, {}
for i = 1, #ARGV do want[ARGV[i]] = i; out[i] = {tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0'), {}} end
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
  local k = want[flat[i + 1]]
  if k then table.insert(out[k][2], flat[i]) end
end
return cjson.encode({tonumber(redis.call('GET', KEYS[2]) or '0'), out})`,
    sha: 'e4043d6bb0a185cbfce697c6839e325c817061f7',
    ro: true,
  },
} as const satisfies Record<string, LuaScript>;

/** A Redis failure (`redis`) or a handler that threw (`handler`, with the progress made before it). */
export class WriteBehindError extends Error {
  override name = 'WriteBehindError';
  readonly code: 'redis' | 'handler';
  readonly op: 'enqueue' | 'drain' | 'snapshot';
  /** What the drain had done before it stopped. */
  readonly report: DrainReport | undefined;
  constructor(code: WriteBehindError['code'], op: WriteBehindError['op'], options: { cause?: unknown; report?: DrainReport } = {}) {
    super(`write-behind ${op}: ${code}`, { cause: options.cause });
    this.code = code;
    this.op = op;
    this.report = options.report;
  }
}

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
  /** Increases with every batch claimed; store it with each applied entry (see {@link WriteBehind.snapshot}). */
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
  /** Handler calls per drain, bounding one run's time. @default 10 */
  maxBatches?: number;
  /** An entry delivered more often than this goes to `<stream>:dlq`. @default 5 */
  maxDeliveries?: number;
  /** Pending entries idle this long (a crashed or failed drain's) are reclaimed, ms. @default 60_000 */
  claimIdleMs?: number;
  /** Stops between batches and before acking (e.g. a lost lock); what is unacked is redelivered later. */
  signal?: AbortSignal;
}

export interface DrainReport {
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
  /** Drains up to `maxBatches` batches. Rejects with {@link WriteBehindError}: `handler` (with its `report`) or `redis`. */
  drain(options: DrainOptions): Promise<DrainReport>;
  /** Atomically: the last batch `seq` and, per tally field, the unacked count and in-flight ids. 1 round trip. */
  snapshot(tallies: readonly string[]): Promise<{ seq: number; pending: Pending[] }>;
}

export interface WriteBehindOptions {
  redis: WriteBehindRedis;
  /** The stream key. Its companions are `<stream>:dlq`, `:tally`, `:seq`, `:inflight`. */
  stream: string;
  /** Approximate cap on the stream's length. @default 100_000 */
  maxLen?: number;
  /** Approximate cap on the dead-letter stream's length. @default 10_000 */
  dlqMaxLen?: number;
}

const RESERVED = /^_/;

/** The client JSON-parses script replies that look like JSON; accept both forms. cjson writes `{}` for an empty list. */
function json(reply: unknown): unknown {
  return typeof reply === 'string' ? JSON.parse(reply) : reply;
}
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

function positive(name: string, n: number, min = 1): number {
  if (!Number.isSafeInteger(n) || n < min) throw new RangeError(`write-behind: ${name} must be an integer >= ${min}, got ${n}`);
  return n;
}

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
 * const q = createWriteBehind({ redis: services(env).redis, stream: keys.slotted('wb', 'views'), maxLen: 100_000 });
 * await q.enqueue({ p: 42 }, { tally: '42' });
 */
export function createWriteBehind({ redis, stream, maxLen = 100_000, dlqMaxLen = 10_000 }: WriteBehindOptions): WriteBehind {
  positive('maxLen', maxLen);
  positive('dlqMaxLen', dlqMaxLen);
  const k = { stream, dlq: `${stream}:dlq`, tally: `${stream}:tally`, seq: `${stream}:seq`, inflight: `${stream}:inflight` };

  return {
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
        throw new WriteBehindError('redis', 'enqueue', { cause });
      }
    },

    async drain({ group, consumer, handler, batchSize = 100, maxBatches = 10, maxDeliveries = 5, claimIdleMs = 60_000, signal }) {
      positive('batchSize', batchSize);
      positive('maxBatches', maxBatches);
      positive('maxDeliveries', maxDeliveries);
      positive('claimIdleMs', claimIdleMs, 0);
      const report: DrainReport = { batches: 0, acked: 0, deadLettered: [], redelivered: 0 };
      const claim = () =>
        runScript<unknown>(redis, SCRIPTS.claim, [k.stream, k.dlq, k.tally, k.seq, k.inflight], [group, consumer, batchSize, claimIdleMs, maxDeliveries, dlqMaxLen]).then((reply) => {
          const [seq, rows, dead] = list(json(reply));
          return { seq: Number(seq), entries: list(rows).map(entryOf), dead: list(dead).map(String) };
        });
      const ack = (ids: string[]) => runScript<number>(redis, SCRIPTS.ack, [k.stream, '', k.tally, '', k.inflight], [group, ...ids]);
      const redisFailure = (cause: unknown) => new WriteBehindError('redis', 'drain', { cause, report });

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
        next = report.batches < maxBatches && got.entries.length === batchSize ? claim() : undefined;
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
        const [seq, rows] = list(json(await runScript<unknown>(redis, SCRIPTS.snapshot, [k.tally, k.seq, k.inflight], [...tallies])));
        return {
          seq: Number(seq),
          pending: tallies.map((_, i) => {
            const [count, ids] = list(list(rows)[i]);
            return { count: Number(count ?? 0), inFlight: list(ids).map(String) };
          }),
        };
      } catch (cause) {
        throw new WriteBehindError('redis', 'snapshot', { cause });
      }
    },
  };
}
