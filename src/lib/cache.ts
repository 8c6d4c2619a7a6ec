/**
 * Cache-aside for Workers over HTTP Redis, counted in round trips: fresh/stale windows refreshed in
 * `waitUntil`, single flight across isolates (a lock taken by the read itself) and within one, tag
 * invalidation by versions never reused, checked reads, negative caching, TTL jitter, invalidation events.
 *
 * When Redis forgets (./cache-fence.ts), a missing tag version, tombstone or lock is "unknown", never
 * "fresh": a load writes back only while its own lock stands, and an entry whose tag is gone is dead.
 *
 * Round trips: a hit is 1: one EVALSHA for the entry and one `SET NX GET` per tag. They are all
 * write-mode commands for @upstash/redis, which batches reads and writes apart, so auto-pipelining
 * sends them in ONE request (a plain GET would travel in a second one). A miss is 2: that read, which also took
 * the lock, and after the loader one write that stores the entry and frees the lock (in
 * `ctx.waitUntil` when a `ctx` is given). An entry fresh by time but failing its tags or `validate`
 * costs one more read, to take the lock. Trade-off: on Upstash Global the read runs on the primary.
 *
 * An entry is one JSON envelope, `{"c":createdAt,"f":freshUntil,"s":staleUntil,"v":value,"t":{tag:
 * version}}`, times in ms on Redis's clock (TIME in the scripts), expiring at `staleUntil` (PX).
 *
 * Failure policy: fail open. A read that fails or outlasts `timeoutMs` goes to `onError` and the
 * loader's value is served (status `miss`, reason `error`): getOrLoad and getMany never throw for
 * Redis. Writes the caller asks for (`set`, `update`, `invalidate*`) reject with {@link CacheError}:
 * a lost invalidation is something the caller must know about.
 *
 * @example
 * const cache = createCache({ redis: createRedis(c.env), keys, defaults: { ttl: 3_600_000, staleTtl: 60_000 } });
 * const r = await cache.getOrLoad(`product:${id}`, () => loadProduct(id), { tags: ['products'], ctx: c.executionCtx });
 * return c.json(r.value, 200, cacheHeaders(r));
 */
import { bumpTagVersions, flightsOf, readTagVersions } from './cache-fence.ts';
import type { KeySchema } from './keys.ts';
import type { RedisCommands } from './redis.ts';
import { runScript, type LuaScript } from './script.ts';

/** The commands this module sends. */
export type CacheRedis = RedisCommands<'evalsha' | 'eval' | 'set' | 'unlink' | 'publish' | 'scan'>;

// SHAs are pinned (and checked in the tests) so the read is an EVALSHA issued synchronously, in the
// same tick as the tag reads: hashing at run time is async and would miss the auto-pipeline batch.
export const SCRIPTS = {
  // KEYS: entry, lock. ARGV: lock? (1|0), token, lease ms, createdAt of an entry the caller found unusable.
  // Takes the lock when the entry is missing, not fresh, or the unusable one; '!' is an invalidation
  // tombstone, free to take. Returns {raw, now, got (1 taken, 0 held elsewhere, -1 not tried), createdAt}.
  read: {
    src: `local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local raw = redis.call('GET', KEYS[1])
local c, f = '-', 0
if raw then
  local mc, mf = string.match(raw, '^{"c":(%d+),"f":(%d+),')
  if mc then c, f = mc, tonumber(mf) end
end
local got = -1
if ARGV[1] == '1' and (f <= now or c == ARGV[4]) then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= '!' then got = 0 else
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
    got = 1
  end
end
return {raw or false, now, got, c}`,
    sha: '87169c1bbd8bfb13e28ea4b4d7438d47413a3664',
  },
  // KEYS: entry, lock. ARGV: mode, token, expected createdAt ('' any, '-' absent), ttl ms, stale ms,
  // envelope tail, lease ms. 'load' writes only while our token holds the lock (a tombstone, another token
  // or no lock: an invalidation may have landed during the load), then frees it; 'set' writes (compare-and-set when ARGV[3] is given)
  // and leaves a tombstone so loads already running cannot overwrite it; 'drop' frees our lock.
  write: {
    src: `local lock = redis.call('GET', KEYS[2])
if ARGV[1] == 'drop' then
  if lock == ARGV[2] then redis.call('DEL', KEYS[2]) end
  return 0
end
if ARGV[1] == 'load' then
  if lock ~= ARGV[2] then return 0 end
elseif ARGV[3] ~= '' then
  local cur = redis.call('GET', KEYS[1])
  local c = cur and string.match(cur, '^{"c":(%d+),') or '-'
  if c ~= ARGV[3] then return 0 end
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl, stale = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('SET', KEYS[1], string.format('{"c":%d,"f":%d,"s":%d,', now, now + ttl, now + ttl + stale) .. ARGV[6], 'PX', string.format('%d', ttl + stale))
if ARGV[1] == 'load' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], '!', 'PX', ARGV[7])
end
return 1`,
    sha: '69daf8a5af43835659546c9ed4e8326ded51d722',
  },
} as const satisfies Record<string, LuaScript>;

/** Timing and robustness settings; every one can be set in `defaults` and overridden per call. */
export interface CachePolicy {
  /** How long a value is fresh, ms. @default 60_000 */
  ttl?: number;
  /** How long after that it may still be served while one refresh runs, ms. @default 0 */
  staleTtl?: number;
  /** Fresh time for a `null`/`undefined` result (no stale window); 0 disables. @default min(ttl, 30_000) */
  negativeTtl?: number;
  /** The fresh time is spread by ± this fraction so keys written together do not expire together. @default 0.1 */
  jitter?: number;
  /** Budget of each Redis round trip, ms; past it the cache fails open. @default 500 */
  timeoutMs?: number;
  /** How long a miss waits for another isolate's load before loading itself, ms. @default 3_000 */
  waitMs?: number;
  /** Lifetime of the single-flight lock and of invalidation tombstones, ms. @default 10_000 */
  leaseMs?: number;
}

/** `(value) => boolean` (a type guard), a zod-like `{ parse }` that throws, or a Standard Schema. */
export type Validator<T> =
  | ((value: unknown) => boolean)
  | { parse(value: unknown): T }
  | { readonly '~standard': { validate(value: unknown): StandardResult<T> | Promise<StandardResult<T>> } };
type StandardResult<T> = { readonly value: T; readonly issues?: undefined } | { readonly issues: ReadonlyArray<unknown> };

/** Options of one read. */
export interface ReadOptions<T> extends CachePolicy {
  /** Tags the entry was written with; read and written together (pass the same on every call). @default [] */
  tags?: readonly string[];
  /** Checks a stored value before it is served; a failure counts as a miss and is reported. */
  validate?: Validator<T>;
}

/** Options of getOrLoad. */
export interface LoadOptions<T> extends ReadOptions<T> {
  /**
   * `c.executionCtx`: stale refreshes and the write after a miss run in its `waitUntil`. Without it
   * the write is awaited and a refresh runs detached (Workers may cut it short; its lock then lapses).
   */
  ctx?: { waitUntil(promise: Promise<unknown>): void };
}

/** `hit`: served from Redis (or from a load another request ran); `stale`: served stale while one refresh runs; `miss`: this call ran the loader. */
export type CacheStatus = 'hit' | 'stale' | 'miss';
/** Why: fresh | stale | absent | tag (invalidated) | invalid (failed `validate`) | joined (in-isolate dedupe) | waited (another isolate loaded) | wait-timeout | error (Redis failed). */
export type CacheReason = 'fresh' | 'stale' | 'absent' | 'tag' | 'invalid' | 'joined' | 'waited' | 'wait-timeout' | 'error';

/** What getOrLoad answers. `createdAt`/`freshUntil` are ms since the epoch (estimated for a miss). */
export interface CacheResult<T> {
  value: T;
  status: CacheStatus;
  reason: CacheReason;
  createdAt: number;
  freshUntil: number;
}

/** One key of getMany: a miss has no value. */
export interface CacheLookup<T> {
  key: string;
  value: T | undefined;
  status: CacheStatus;
  reason: CacheReason;
  createdAt?: number;
  freshUntil?: number;
}

/** The JSON message published on the cache's channel for every invalidation. */
export type CacheEvent =
  | { type: 'invalidate'; key: string; at: number }
  | { type: 'invalidateTag'; tag: string; at: number }
  | { type: 'invalidatePattern'; pattern: string; at: number };

/**
 * A Redis failure (`timeout`, `redis`), an unusable stored value (`invalid`), a failed background
 * refresh (`loader`) or an update that lost every compare-and-set (`conflict`). `message` names only
 * the operation; the key and the underlying error are fields, never printed by the default `onError`.
 */
export class CacheError extends Error {
  override name = 'CacheError';
  readonly code: 'timeout' | 'redis' | 'invalid' | 'loader' | 'conflict';
  readonly op: string;
  readonly key: string | undefined;
  constructor(code: CacheError['code'], op: string, key?: string, options?: { cause?: unknown }) {
    super(`cache ${op}: ${code}`, options);
    this.code = code;
    this.op = op;
    this.key = key;
  }
}

export interface CacheOptions {
  redis: CacheRedis;
  keys: KeySchema;
  /** Policy of every call unless overridden. */
  defaults?: CachePolicy;
  /** Receives every fail-open event. @default console.warn of op, code and the cause's class */
  onError?: (error: CacheError) => void;
  /** Pub/sub channel of {@link CacheEvent}s. @default keys.key('cache', 'events') */
  channel?: string;
}

export interface Cache {
  /**
   * The value of `key`, from Redis or from `loader`; never throws for Redis (the loader's own errors
   * propagate). Concurrent calls for a key in this isolate (same client) share the first one's load
   * and options, for up to `waitMs`.
   * Across isolates the read takes a lock (SET NX PX in the script): the others serve the stale value
   * if there is one, else poll with backoff for up to `waitMs` and then run the loader themselves
   * (reason `wait-timeout`). `status` is `miss` only on the call that ran the loader.
   */
  getOrLoad<T>(key: string, loader: () => T | Promise<T>, options?: LoadOptions<T>): Promise<CacheResult<T>>;
  /** Several keys in one round trip, each with its own staleness; no loader, no lock. */
  getMany<T>(keys: readonly string[], options?: ReadOptions<T>): Promise<CacheLookup<T>[]>;
  /** getMany of one key. */
  get<T>(key: string, options?: ReadOptions<T>): Promise<CacheLookup<T>>;
  /** Write-through: 1 round trip (2 with tags, whose versions are read first). */
  set<T>(key: string, value: T, options?: Omit<ReadOptions<T>, 'validate'>): Promise<void>;
  /** Read, apply `fn`, compare-and-set; retried up to 5 times on a concurrent write. 2 round trips. */
  update<T>(key: string, fn: (current: T | undefined) => T | Promise<T>, options?: ReadOptions<T>): Promise<T>;
  /** Delete on write, fence loads in flight, publish the event: 1 round trip. */
  invalidate(key: string): Promise<void>;
  /** New versions for the tags (every entry stamped with an older one is dead, stale or not) and publish: 1 round trip. */
  invalidateTag(tags: string | readonly string[]): Promise<void>;
  /**
   * The slow path: SCAN MATCH the entries whose key matches `pattern` (a glob over cache keys, e.g.
   * `user:123:*`) and UNLINK them page by page, with their lock keys (fencing loads in flight),
   * bounded by `maxKeys` and `maxIterations`. Pass the returned `cursor` back to continue when
   * `complete` is false. On Redis Cluster SCAN covers one node only.
   */
  invalidatePattern(pattern: string, options?: PatternOptions): Promise<{ deleted: number; complete: boolean; cursor: string }>;
}

export interface PatternOptions {
  /** SCAN COUNT hint per page. @default 500 */
  count?: number;
  /** Stop after this many keys. @default 1_000 */
  maxKeys?: number;
  /** Stop after this many SCAN calls. @default 100 */
  maxIterations?: number;
  /** Resume from a previous call's cursor. @default "0" */
  cursor?: string;
}

const DEFAULTS = { ttl: 60_000, staleTtl: 0, jitter: 0.1, timeoutMs: 500, waitMs: 3_000, leaseMs: 10_000 };
type Policy = typeof DEFAULTS & { negativeTtl: number };

function policy(...layers: CachePolicy[]): Policy {
  const set = layers.map((l) => Object.fromEntries(Object.entries(l).filter(([, v]) => v !== undefined)));
  const p = Object.assign({}, DEFAULTS, ...set) as typeof DEFAULTS & { negativeTtl?: number };
  const out = { ...p, negativeTtl: p.negativeTtl ?? Math.min(p.ttl, 30_000) };
  const ok = (n: number, min: number) => Number.isFinite(n) && n >= min;
  if (!ok(out.ttl, 1) || !ok(out.staleTtl, 0) || !ok(out.negativeTtl, 0) || !ok(out.timeoutMs, 1) || !ok(out.waitMs, 0) || !ok(out.leaseMs, 1) || !(out.jitter >= 0 && out.jitter < 1)) {
    throw new RangeError('cache: ttl, timeoutMs and leaseMs must be >= 1 ms, staleTtl, negativeTtl and waitMs >= 0, jitter in [0, 1)');
  }
  return out;
}

function warn(error: CacheError): void {
  console.warn(`[cache] ${error.message}${error.cause instanceof Error ? ` (${error.cause.name})` : ''}`);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Races a Redis call against the budget; the late call's own failure is swallowed (already reported as the timeout). */
function timed<T>(work: Promise<T>, ms: number, op: string, key?: string): Promise<T> {
  let timer!: ReturnType<typeof setTimeout>; // assigned synchronously by the executor below
  work.catch(() => undefined);
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CacheError('timeout', op, key)), ms);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

const asCacheError = (err: unknown, op: string, key?: string) =>
  err instanceof CacheError ? err : new CacheError('redis', op, key, { cause: err });

interface Envelope { c: number; f: number; s: number; v: unknown; t: Record<string, unknown>; n: boolean }

function envelope(raw: unknown): Envelope | undefined {
  let doc = raw;
  if (typeof raw === 'string') {
    try {
      doc = JSON.parse(raw);
    } catch {
      return undefined;
    }
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const { c, f, s, v, t, n } = doc as Record<string, unknown>;
  if (typeof c !== 'number' || typeof f !== 'number' || typeof s !== 'number') return undefined;
  if (t !== undefined && (typeof t !== 'object' || t === null)) return undefined;
  return { c, f, s, v, t: (t ?? {}) as Record<string, unknown>, n: n === 1 };
}

async function check<T>(validate: Validator<T> | undefined, value: unknown): Promise<{ value: T } | undefined> {
  if (!validate) return { value: value as T };
  try {
    if (typeof validate === 'function') return validate(value) ? { value: value as T } : undefined;
    if ('~standard' in validate) {
      const r = await validate['~standard'].validate(value);
      return r.issues ? undefined : { value: r.value };
    }
    return { value: validate.parse(value) };
  } catch {
    return undefined;
  }
}

/** What one read script answers, plus the current versions of the tags read with it. */
interface Read { raw: unknown; now: number; got: number; c: string; versions: Map<string, string> }
type Verdict<T> = { state: 'fresh' | 'stale'; value: T; env: Envelope } | { state: 'absent' | 'tag' | 'invalid' };

/**
 * Builds a cache. Does no I/O.
 *
 * @example
 * const cache = createCache({ redis, keys: keySchema({ app: 'shop', env: 'prod' }), defaults: { ttl: 3_600_000 } });
 * const { value, status } = await cache.getOrLoad('product:42', () => db.product(42), { tags: ['products'], ctx });
 */
export function createCache({ redis, keys, defaults = {}, onError = warn, channel = keys.key('cache', 'events') }: CacheOptions): Cache {
  policy(defaults); // fail at construction on a bad default
  const inflight = flightsOf<CacheResult<unknown>>(redis);
  const slot = (key: string) => [keys.slotted('cache', key), keys.slotted('cache', key, 'lock')];
  const tagKey = (tag: string) => keys.key('cache', 'tag', tag);
  const report = (error: CacheError) => {
    try {
      onError(error);
    } catch {
      // a throwing reporter must not turn fail-open into a failure
    }
  };

  const readTags = (tags: readonly string[]) => readTagVersions(redis, tagKey, tags);

  /** One round trip: the read script per key (taking the lock when `lock` is given) and the tag versions. */
  async function read(list: readonly string[], tags: readonly string[], p: Policy, op: string, lock?: { token: string; bad: string }): Promise<Read[]> {
    const args = [lock ? 1 : 0, lock?.token ?? '', p.leaseMs, lock?.bad ?? ''];
    const entries = Promise.all(list.map((k) => runScript<[unknown, number, number, unknown]>(redis, SCRIPTS.read, slot(k), args)));
    const [rows, versions] = await timed(Promise.all([entries, readTags(tags)]), p.timeoutMs, op, list.length === 1 ? list[0] : undefined);
    return rows.map(([raw, now, got, c]) => ({ raw, now, got, c: String(c), versions }));
  }

  async function readOne(key: string, tags: readonly string[], p: Policy, op: string, lock?: { token: string; bad: string }): Promise<Read> {
    const [r] = await read([key], tags, p, op, lock);
    if (!r) throw new TypeError('cache: the read had no reply');
    return r;
  }

  async function judge<T>(key: string, r: Read, tags: readonly string[], validate: Validator<T> | undefined): Promise<Verdict<T>> {
    if (r.raw == null) return { state: 'absent' };
    const env = envelope(r.raw);
    if (!env) {
      report(new CacheError('invalid', 'read', key));
      return { state: 'invalid' };
    }
    if (r.now >= env.s) return { state: 'absent' };
    for (const tag of new Set([...tags, ...Object.keys(env.t)])) {
      if (!Object.hasOwn(env.t, tag) || env.t[tag] !== r.versions.get(tag)) return { state: 'tag' };
    }
    // Only a stored null/undefined skips the check, so a tampered "n" cannot smuggle a value past it.
    const checked = env.n && env.v == null ? { value: env.v as T } : await check(validate, env.v);
    if (!checked) {
      report(new CacheError('invalid', 'read', key));
      return { state: 'invalid' };
    }
    return { state: r.now < env.f ? 'fresh' : 'stale', value: checked.value, env };
  }

  function encode(value: unknown, versions: Map<string, string>, p: Policy) {
    const negative = value == null;
    const ttl = negative ? p.negativeTtl : Math.max(1, Math.round(p.ttl * (1 + p.jitter * (2 * Math.random() - 1))));
    const tail = JSON.stringify({ v: value, t: Object.fromEntries(versions), ...(negative ? { n: 1 } : {}) }).slice(1);
    return { ttl, stale: negative ? 0 : p.staleTtl, tail };
  }

  /** Stores a loaded value if our lock (or none) still stands; never rejects: failures are reported. */
  async function store(key: string, token: string, value: unknown, versions: Map<string, string>, p: Policy): Promise<void> {
    try {
      const { ttl, stale, tail } = encode(value, versions, p);
      const mode = ttl > 0 ? 'load' : 'drop';
      await timed(runScript(redis, SCRIPTS.write, slot(key), [mode, token, '', ttl, stale, tail, p.leaseMs]), p.timeoutMs, 'write', key);
    } catch (err) {
      report(asCacheError(err, 'write', key));
    }
  }

  async function drop(key: string, token: string, p: Policy): Promise<void> {
    await timed(runScript(redis, SCRIPTS.write, slot(key), ['drop', token, '', 0, 0, '', 0]), p.timeoutMs, 'drop', key).catch((err: unknown) =>
      report(asCacheError(err, 'drop', key)),
    );
  }

  async function fill<T>(key: string, loader: () => T | Promise<T>, o: LoadOptions<T>, p: Policy, token: string, versions: Map<string, string>, reason: CacheReason): Promise<CacheResult<T>> {
    let value: T;
    try {
      value = await loader();
    } catch (err) {
      const release = drop(key, token, p);
      if (o.ctx) o.ctx.waitUntil(release);
      else await release;
      throw err;
    }
    const write = store(key, token, value, versions, p);
    if (o.ctx) o.ctx.waitUntil(write);
    else await write;
    const now = Date.now();
    return { value, status: 'miss', reason, createdAt: now, freshUntil: now + (value == null ? p.negativeTtl : p.ttl) };
  }

  async function load<T>(key: string, loader: () => T | Promise<T>, o: LoadOptions<T>): Promise<CacheResult<T>> {
    const p = policy(defaults, o);
    const tags = o.tags ?? [];
    const token = crypto.randomUUID();
    const deadline = Date.now() + p.waitMs;
    let bad = '';
    let why: 'absent' | 'tag' | 'invalid' | undefined;
    let delay = 20;
    let waited = false;
    for (;;) {
      let r: Read;
      try {
        r = await readOne(key, tags, p, 'read', { token, bad });
      } catch (err) {
        report(asCacheError(err, 'read', key));
        const value = await loader();
        const now = Date.now();
        return { value, status: 'miss', reason: 'error', createdAt: now, freshUntil: now + p.ttl };
      }
      const row = r;
      // The entry already found unusable is not judged (nor reported) again.
      const v: Verdict<T> = bad !== '' && r.c === bad && why ? { state: why } : await judge<T>(key, r, tags, o.validate);
      if (v.state === 'fresh' || v.state === 'stale') {
        if (v.state === 'stale' && r.got === 1) {
          const refresh = (async () => {
            let value: T;
            try {
              value = await loader();
            } catch (err) {
              report(new CacheError('loader', 'refresh', key, { cause: err }));
              return drop(key, token, p);
            }
            return store(key, token, value, row.versions, p);
          })();
          if (o.ctx) o.ctx.waitUntil(refresh);
          // Without a ctx the refresh still runs; it never rejects, and Workers may cut it short.
        }
        return { value: v.value, status: v.state === 'fresh' ? 'hit' : 'stale', reason: v.state === 'fresh' && waited ? 'waited' : v.state, createdAt: v.env.c, freshUntil: v.env.f };
      }
      why ??= v.state;
      if (r.got === 1) return fill(key, loader, o, p, token, r.versions, why);
      // An unusable entry the script took for fresh: ask again, naming it, so the lock is tried.
      bad = r.raw == null ? '' : r.c;
      if (Date.now() >= deadline) return fill(key, loader, o, p, token, r.versions, 'wait-timeout');
      if (r.got === 0) {
        waited = true;
        await sleep(Math.min(delay * (0.75 + Math.random() / 2), Math.max(0, deadline - Date.now())));
        delay = Math.min(delay * 1.5, 250);
      }
    }
  }

  async function getMany<T>(list: readonly string[], o: ReadOptions<T> = {}): Promise<CacheLookup<T>[]> {
    const p = policy(defaults, o);
    const tags = o.tags ?? [];
    let reads: Read[];
    try {
      reads = await read(list, tags, p, 'getMany');
    } catch (err) {
      report(asCacheError(err, 'getMany'));
      return list.map((key) => ({ key, value: undefined, status: 'miss', reason: 'error' }));
    }
    return Promise.all(
      list.map(async (key, i): Promise<CacheLookup<T>> => {
        const v = await judge<T>(key, reads[i] ?? { raw: null, now: 0, got: -1, c: '-', versions: new Map() }, tags, o.validate);
        if (v.state === 'fresh' || v.state === 'stale') {
          return { key, value: v.value, status: v.state === 'fresh' ? 'hit' : 'stale', reason: v.state, createdAt: v.env.c, freshUntil: v.env.f };
        }
        return { key, value: undefined, status: 'miss', reason: v.state };
      }),
    );
  }

  async function write(key: string, value: unknown, o: ReadOptions<unknown>, expect: string): Promise<boolean> {
    const p = policy(defaults, o);
    try {
      const versions = o.tags?.length ? await timed(readTags(o.tags), p.timeoutMs, 'set', key) : new Map<string, string>();
      const { ttl, stale, tail } = encode(value, versions, p);
      const n = await timed(runScript<number>(redis, SCRIPTS.write, slot(key), ['set', '', expect, Math.max(ttl, 1), stale, tail, p.leaseMs]), p.timeoutMs, 'set', key);
      return n === 1;
    } catch (err) {
      throw asCacheError(err, 'set', key);
    }
  }

  function publish(event: CacheEvent): Promise<number> {
    return redis.publish(channel, JSON.stringify(event));
  }

  return {
    async getOrLoad<T>(key: string, loader: () => T | Promise<T>, options: LoadOptions<T> = {}): Promise<CacheResult<T>> {
      const id = keys.slotted('cache', key);
      const running = inflight.get(id) as Promise<CacheResult<T>> | undefined;
      if (running) {
        // Bounded like a wait on another isolate: a load stuck in a cancelled request is not awaited forever.
        let timer!: ReturnType<typeof setTimeout>;
        const gaveUp = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), policy(defaults, options).waitMs)));
        const r = await Promise.race([running, gaveUp]).finally(() => clearTimeout(timer));
        if (!r) return load(key, loader, options);
        return r.status === 'miss' ? { ...r, status: 'hit', reason: 'joined' } : r;
      }
      const mine = load(key, loader, options);
      inflight.add(id, mine, options.tags ?? []);
      return mine;
    },
    getMany,
    async get<T>(key: string, options?: ReadOptions<T>) {
      const [one] = await getMany<T>([key], options);
      return one ?? { key, value: undefined, status: 'miss', reason: 'absent' };
    },
    async set(key, value, options = {}) {
      await write(key, value, options, '');
    },
    async update<T>(key: string, fn: (current: T | undefined) => T | Promise<T>, o: ReadOptions<T> = {}): Promise<T> {
      const p = policy(defaults, o);
      const tags = o.tags ?? [];
      for (let attempt = 0; attempt < 5; attempt++) {
        let r: Read;
        try {
          r = await readOne(key, tags, p, 'update');
        } catch (err) {
          throw asCacheError(err, 'update', key);
        }
        const v = await judge<T>(key, r, tags, o.validate);
        const next = await fn(v.state === 'fresh' || v.state === 'stale' ? v.value : undefined);
        if (await write(key, next, o, r.c)) return next;
      }
      throw new CacheError('conflict', 'update', key);
    },
    async invalidate(key) {
      const [entry = '', lock = ''] = slot(key);
      const p = policy(defaults);
      inflight.drop({ id: entry });
      const work = Promise.all([redis.unlink(entry), redis.set(lock, '!', { px: p.leaseMs }), publish({ type: 'invalidate', key, at: Date.now() })]);
      await timed(work, p.timeoutMs, 'invalidate', key).catch((err: unknown) => {
        throw asCacheError(err, 'invalidate', key);
      });
    },
    async invalidateTag(tags) {
      const list = typeof tags === 'string' ? [tags] : tags;
      const at = Date.now();
      inflight.drop({ tags: list });
      const work = Promise.all([...bumpTagVersions(redis, tagKey, list), ...list.map((tag) => publish({ type: 'invalidateTag', tag, at }))]);
      await timed(work, policy(defaults).timeoutMs, 'invalidateTag').catch((err: unknown) => {
        throw asCacheError(err, 'invalidateTag');
      });
    },
    async invalidatePattern(pattern, { count = 500, maxKeys = 1_000, maxIterations = 100, cursor = '0' } = {}) {
      const p = policy(defaults);
      // Entries and their lock keys (after the '}'): a load whose lock is gone cannot write back.
      const entries = keys.slotted('cache', pattern);
      const match = `${entries}*`;
      inflight.drop({ glob: entries });
      const unlinks: Promise<number>[] = [];
      const fences: Promise<number>[] = [];
      let found = 0;
      let complete = false;
      try {
        for (let i = 0; i < maxIterations && found < maxKeys; i++) {
          const [next, keyPage] = await timed(redis.scan(cursor, { match, count }), p.timeoutMs, 'invalidatePattern');
          const page = keyPage.filter((k) => k.endsWith('}'));
          const locks = keyPage.filter((k) => !k.endsWith('}'));
          const batch = page.slice(0, maxKeys - found);
          // A cut page is scanned again on resume, so its cursor is not advanced.
          if (batch.length === page.length) cursor = String(next);
          if (batch.length > 0) unlinks.push(redis.unlink(...batch));
          if (locks.length > 0) fences.push(redis.unlink(...locks));
          found += batch.length;
          if (String(next) === '0' && batch.length === page.length) {
            complete = true;
            break;
          }
        }
        unlinks.push(publish({ type: 'invalidatePattern', pattern, at: Date.now() }).then(() => 0));
        const [counts] = await timed(Promise.all([Promise.all(unlinks), Promise.all(fences)]), p.timeoutMs, 'invalidatePattern');
        return { deleted: counts.reduce((a, b) => a + b, 0), complete, cursor: complete ? '0' : cursor };
      } catch (err) {
        void Promise.allSettled([...unlinks, ...fences]);
        throw asCacheError(err, 'invalidatePattern');
      }
    },
  };
}

/**
 * Response headers for a result: `X-Cache` (HIT, STALE or MISS; MISS only where the loader ran) and
 * `Age` in seconds.
 *
 * @example
 * return c.json(r.value, 200, cacheHeaders(r));
 */
export function cacheHeaders(result: Pick<CacheResult<unknown>, 'status' | 'createdAt'>, now = Date.now()): Record<string, string> {
  return { 'X-Cache': result.status.toUpperCase(), Age: String(Math.max(0, Math.floor((now - result.createdAt) / 1000))) };
}
