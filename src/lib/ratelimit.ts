/**
 * Rate limits in one round trip per check (zero when the in-memory block cache already knows).
 *
 * - `slidingWindow` | `fixedWindow` | `tokenBucket`: `@upstash/ratelimit` 2.2, with a bounded block
 *   cache, analytics off and its own timeout off (it always fails open; we apply our policy). Their
 *   cost semantics are Upstash's: the sliding window admits while one unit is left whatever the cost,
 *   the fixed window counts refused calls too.
 * - `slidingLog`: the seed articles' sorted set (ZREMRANGEBYSCORE, ZCARD, ZADD, PEXPIRE) in one script,
 *   exact, time from Redis `TIME`. Cost N adds N members (ZCARD stays O(1); at most `limit` members).
 * - compound: several limits × identity parts (burst + daily, user + IP) in the same script, which
 *   checks every entry before writing any: a refused call consumes nothing. Algorithms: sliding log
 *   and fixed window (Redis-time aligned). A lone sliding log is its one-entry case.
 *
 * Cluster: a compound policy's keys share the hash tag of its name, `keys.slotted('rl', name, …)`, so
 * a policy lives in ONE slot: the price of atomic checks across identity parts. Single limiters tag
 * by name + identity and spread over the cluster.
 *
 * `slidingWindow` accuracy: Upstash counts `floor((1 - p) · previous) + current` where p is the part of
 * the current window gone by on the caller's clock. Inside one window a burst admits exactly `limit`;
 * a burst crossing a boundary at p admits up to `limit + ceil(p · limit)` in arrival order and never
 * more than `2 · limit` (each of the two windows holds at most `limit`), the bound for any window-long
 * interval.
 *
 * Failure budget: `timeoutMs` is raced around the WHOLE client call, so the client's own network
 * retries (default 5, `50·e^i` ms apart, ~4.3 s) happen inside it and cannot stretch it; HTTP errors
 * (a 503) are not retried and fail at once. Past the budget the call is abandoned (it may still land
 * once). Give the limiter a client with few retries and a per-request signal no longer than the
 * budget, `createRedis(env, { timeoutMs, retries: 1 })`, so abandoned work ends too.
 *
 * @example
 * const limiter = createRatelimit(createRedis(env, { timeoutMs: 500, retries: 1 }), { name: 'api', keys, algorithm: 'slidingLog', limit: 100, windowMs: 60_000 });
 * app.use('/api/*', rateLimit({ limiter, timeoutMs: 500 }));
 */
import { Ratelimit } from '@upstash/ratelimit';
import type { Redis } from '@upstash/redis/cloudflare';
import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { routePath } from 'hono/route';
import { problemResponse } from './errors.ts';
import type { KeySchema } from './keys.ts';
import { classifyRedisError } from './redis.ts';
import { runScript, type LuaScript } from './script.ts';

/** What the limiters need from `@upstash/redis` (get/set only because Upstash's type asks for them). */
export type RatelimitRedis = Pick<Redis, 'evalsha' | 'eval' | 'get' | 'set'>;

/** Who is limited: one string, or named parts (`{ user: 'u1', ip: '203.0.113.7' }`). */
export type Identity = string | Readonly<Record<string, string | undefined>>;

export interface PolicyState {
  /** The limit's name (the limiter's name for single limiters). */
  name: string;
  /** Compound only: which identity part this state counts (`ip`, `user`, …). */
  by?: string;
  success: boolean;
  limit: number;
  remaining: number;
  /** Epoch ms when room frees up (sliding log, token bucket) or the window ends. */
  reset: number;
  windowMs: number;
}

/** `@upstash/ratelimit`'s response shape plus which limits refused and every limit's state. */
export interface LimitResult {
  success: boolean;
  /** The binding limit: a refusing one (latest reset), else the one with the least remaining. */
  limit: number;
  remaining: number;
  /** Epoch ms. */
  reset: number;
  /** Hand to `waitUntil`. */
  pending: Promise<unknown>;
  /** `cacheBlock`: refused from the in-memory block cache, no round trip. */
  reason?: 'cacheBlock';
  /** Names of the limits that refused; empty on success. */
  failed: string[];
  policies: PolicyState[];
}

export interface LimitOptions {
  /** Units this call consumes (Upstash algorithms accept negative refunds). @default 1 */
  cost?: number;
  /** A per-call limit: a number for a one-limit limiter, else by limit name. @default the configured limit */
  limit?: number | Readonly<Record<string, number>>;
  /** Deadline for the whole call, client retries included; past it `RateLimitError`. @default 1000 */
  timeoutMs?: number;
}

export interface Limiter {
  readonly name: string;
  /** One round trip; refusals are values, infrastructure failures throw `RateLimitError`. */
  limit(identity: Identity, options?: LimitOptions): Promise<LimitResult>;
}

export type RatelimitOptions = {
  /** Appears in keys and in the `RateLimit` headers: `[\w.-]+`. */
  name: string;
  keys: KeySchema;
  /** Max identifiers in each Upstash block cache (one cache per distinct limit); `false` = none. @default 10_000 */
  cacheSize?: number | false;
} & (
  | { algorithm: 'slidingLog' | 'slidingWindow' | 'fixedWindow'; limit: number; windowMs: number }
  | { algorithm: 'tokenBucket'; /** bucket size */ limit: number; refillRate: number; intervalMs: number }
);

export interface CompoundLimit {
  name: string;
  limit: number;
  windowMs: number;
  /** @default 'slidingLog' */
  algorithm?: 'slidingLog' | 'fixedWindow';
  /** Count only this identity part (e.g. `user`); missing parts are skipped. @default every part */
  by?: string;
}

/** Infrastructure failure of a check: `timeout` (budget spent) or `error` (Redis or gateway). */
export class RateLimitError extends Error {
  override name = 'RateLimitError';
  readonly reason: 'timeout' | 'error';
  constructor(message: string, reason: 'timeout' | 'error', options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/**
 * A Map that keeps at most `max` entries, evicting the least recently used; Upstash's block cache
 * is an unbounded Map otherwise, which a flood of distinct identifiers would grow without end.
 */
export class LruMap<K, V> extends Map<K, V> {
  readonly max: number;
  constructor(max: number) {
    super();
    if (!(Number.isInteger(max) && max > 0)) throw new TypeError(`LruMap: max must be a positive integer, got ${max}`);
    this.max = max;
  }
  override get(key: K): V | undefined {
    if (!super.has(key)) return undefined;
    const value = super.get(key) as V;
    super.delete(key);
    super.set(key, value);
    return value;
  }
  override set(key: K, value: V): this {
    super.delete(key);
    super.set(key, value);
    for (const oldest of super.keys()) {
      if (this.size <= this.max) break;
      super.delete(oldest);
    }
    return this;
  }
}

/**
 * KEYS: one per (limit, identifier). ARGV: nonce, cost, then per key: kind (`log`|`fixed`), limit,
 * window ms. Reply: allowed, then per key: ok, remaining, ms until reset, limit. Scores are ms
 * (13 digits survive Lua's %.14g number formatting; µs would not).
 */
export const LIMIT_SCRIPT = `local nonce, cost = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all, out, used, start = 1, {0}, {}, {}
for i, key in ipairs(KEYS) do
  local kind, limit, window = ARGV[i * 3], tonumber(ARGV[i * 3 + 1]), tonumber(ARGV[i * 3 + 2])
  local reset
  if kind == 'log' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    used[i] = redis.call('ZCARD', key)
    local k = math.max(used[i] + cost - limit, 1) - 1
    local e = redis.call('ZRANGE', key, k, k, 'WITHSCORES')
    reset = e[2] and tonumber(e[2]) + window - now or window
  else
    start[i] = now - now % window
    local h = redis.call('HMGET', key, 'w', 'n')
    used[i] = tonumber(h[1]) == start[i] and tonumber(h[2]) or 0
    reset = start[i] + window - now
  end
  if used[i] + cost > limit then all = 0 end
  out[#out + 1] = used[i] + cost <= limit and 1 or 0
  out[#out + 1] = math.max(limit - used[i], 0)
  out[#out + 1] = reset
  out[#out + 1] = limit
end
if all == 1 and cost > 0 then
  for i, key in ipairs(KEYS) do
    local window = tonumber(ARGV[i * 3 + 2])
    if ARGV[i * 3] == 'log' then
      for j = 1, cost do redis.call('ZADD', key, now, nonce .. ':' .. j) end
      redis.call('PEXPIRE', key, window)
    else
      redis.call('HSET', key, 'w', start[i], 'n', used[i] + cost)
      redis.call('PEXPIREAT', key, start[i] + window)
    end
    out[i * 4 - 1] = out[i * 4 - 1] - cost
  end
end
out[1] = all
return out
`;
/** sha1(LIMIT_SCRIPT), pinned in the tests so an edit cannot silently change it. */
export const LIMIT_SCRIPT_SHA = '06b68ab1e4e32dc5872be001bf6ca528291cdf44';
const LIMIT = { src: LIMIT_SCRIPT, sha: LIMIT_SCRIPT_SHA } as const satisfies LuaScript;

const NAME = /^[\w.-]+$/;
const DEFAULT_TIMEOUT_MS = 1000;

function checkName(what: string, name: string): void {
  if (!NAME.test(name)) throw new TypeError(`ratelimit: ${what} must match ${NAME}, got "${name}"`);
}
function checkCount(what: string, n: number): void {
  if (!(Number.isInteger(n) && n > 0)) throw new TypeError(`ratelimit: ${what} must be a positive integer, got ${n}`);
}

function parts(identity: Identity): [string, string][] {
  const list: [string, string][] = typeof identity === 'string' ? [['id', identity]] : Object.entries(identity).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== '');
  if (list.length === 0 || list.some(([, v]) => v === '')) throw new TypeError('ratelimit: empty identity');
  return list;
}
/** One string for a whole identity: `u1`, or `user:u1|ip:203.0.113.7`. */
function flatten(identity: Identity): string {
  const list = parts(identity);
  return typeof identity === 'string' ? identity : list.map(([k, v]) => `${k}:${v}`).join('|');
}

function limitFor(limit: LimitOptions['limit'], name: string, count: number, fallback: number): number {
  const value = typeof limit === 'number' ? (count === 1 ? limit : NaN) : (limit?.[name] ?? fallback);
  if (Number.isNaN(value)) throw new TypeError('ratelimit: a number `limit` needs a one-limit limiter; pass { [name]: n }');
  checkCount('limit', value);
  return value;
}

function toResult(success: boolean, policies: PolicyState[], pending: Promise<unknown>, cacheBlock = false): LimitResult {
  const failed = policies.filter((p) => !p.success);
  const pick = success
    ? policies.reduce((a, b) => (b.remaining < a.remaining || (b.remaining === a.remaining && b.reset > a.reset) ? b : a))
    : failed.reduce((a, b) => (b.reset > a.reset ? b : a));
  return {
    success, limit: pick.limit, remaining: pick.remaining, reset: pick.reset, pending,
    ...(cacheBlock ? { reason: 'cacheBlock' as const } : {}),
    failed: [...new Set(failed.map((p) => p.name))], policies,
  };
}

function withBudget<T>(work: Promise<T>, ms: number, name: string): Promise<T> {
  const failed = work.catch((cause: unknown) => {
    throw new RateLimitError(`rate limit "${name}": Redis call failed`, 'error', { cause });
  });
  if (!(ms > 0 && Number.isFinite(ms))) return failed;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RateLimitError(`rate limit "${name}": no answer within ${ms} ms`, 'timeout')), ms);
  });
  return Promise.race([failed, deadline]).finally(() => {
    if (timer !== undefined) clearTimeout(timer);
  });
}

function nonce(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
}

function scriptLimiter(redis: RatelimitRedis, name: string, keys: KeySchema, limits: readonly CompoundLimit[], compound: boolean): Limiter {
  return {
    name,
    limit(identity, options = {}) {
      const cost = options.cost ?? 1;
      if (!(Number.isInteger(cost) && cost >= 0)) throw new TypeError(`ratelimit: cost must be a whole number >= 0, got ${cost}`);
      const ids: [string, string][] = compound ? parts(identity) : [['', flatten(identity)]];
      const entries: (PolicyState & { key: string; kind: string })[] = [];
      for (const l of limits) {
        const limit = limitFor(options.limit, l.name, limits.length, l.limit);
        for (const [kind, id] of ids) {
          if (l.by !== undefined && l.by !== kind) continue;
          const key = compound ? keys.slotted('rl', name, l.name, kind, id) : keys.slotted('rl', `${name}:${id}`);
          if (entries.some((e) => e.key === key)) continue;
          entries.push({ key, kind: l.algorithm === 'fixedWindow' ? 'fixed' : 'log', name: l.name, ...(compound ? { by: kind } : {}), success: true, limit, remaining: 0, reset: 0, windowMs: l.windowMs });
        }
      }
      if (entries.length === 0) throw new TypeError(`ratelimit "${name}": no limit applies to identity parts ${ids.map(([k]) => k).join(', ')}`);
      const args = [nonce(), cost, ...entries.flatMap((e) => [e.kind, e.limit, e.windowMs])];
      const work = runScript<number[]>(redis, LIMIT, entries.map((e) => e.key), args).then((reply) => {
        const now = Date.now();
        const policies = entries.map(({ key: _k, kind: _t, ...p }, i): PolicyState => ({
          ...p, success: reply[i * 4 + 1] === 1, remaining: Number(reply[i * 4 + 2]), reset: now + Number(reply[i * 4 + 3]),
        }));
        return toResult(reply[0] === 1, policies, Promise.resolve());
      });
      return withBudget(work, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, name);
    },
  };
}

/**
 * A limiter for one limit. No I/O here: Upstash instances are made on first use, one per distinct
 * limit (overrides), each with its own bounded block cache.
 *
 * @example
 * const login = createRatelimit(redis, { name: 'login', keys, algorithm: 'slidingLog', limit: 5, windowMs: 900_000 });
 * const { success, reset } = await login.limit({ ip, user: username });
 */
export function createRatelimit(redis: RatelimitRedis, options: RatelimitOptions): Limiter {
  const { name, keys, cacheSize = 10_000 } = options;
  checkName('name', name);
  checkCount('limit', options.limit);
  if (options.algorithm === 'tokenBucket') [options.refillRate, options.intervalMs].forEach((n) => checkCount('refillRate/intervalMs', n));
  else checkCount('windowMs', options.windowMs);
  if (options.algorithm === 'slidingLog') return scriptLimiter(redis, name, keys, [{ name, limit: options.limit, windowMs: options.windowMs }], false);

  let windowMs: number;
  let algorithm: (limit: number) => ReturnType<typeof Ratelimit.fixedWindow>;
  if (options.algorithm === 'tokenBucket') {
    const { refillRate, intervalMs, limit: size } = options;
    // A per-key limit scales the refill rate too, so the bucket still refills in the same time,
    // which is what RateLimit-Policy reports as its window.
    windowMs = Math.ceil((intervalMs * size) / refillRate);
    algorithm = (limit) => Ratelimit.tokenBucket(Math.max(1, Math.round((refillRate * limit) / size)), `${intervalMs}ms`, limit);
  } else {
    const kind = options.algorithm;
    windowMs = options.windowMs;
    algorithm = (limit) => Ratelimit[kind](limit, `${windowMs}ms`);
  }
  const instances = new LruMap<number, Ratelimit>(16);
  const instance = (limit: number): Ratelimit => {
    let rl = instances.get(limit);
    if (!rl) {
      rl = new Ratelimit({
        redis, limiter: algorithm(limit), prefix: `${keys.prefix}:rl`, ephemeralCache: cacheSize === false ? false : new LruMap(cacheSize),
        analytics: false, timeout: 0, enableTelemetry: false,
      });
      instances.set(limit, rl);
    }
    return rl;
  };
  const strip = `${keys.prefix}:rl:`.length;
  return {
    name,
    limit(identity, opts = {}) {
      const limit = limitFor(opts.limit, name, 1, options.limit);
      // `{name:id}`: Upstash appends `:<window>`, so current and previous window share a slot.
      const id = keys.slotted('rl', `${name}:${flatten(identity)}`).slice(strip);
      const work = instance(limit)
        .limit(id, { rate: opts.cost ?? 1 })
        .then((r) => toResult(r.success, [{ name, success: r.success, limit: r.limit, remaining: r.remaining, reset: r.reset, windowMs }], r.pending, r.reason === 'cacheBlock'));
      return withBudget(work, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, name);
    },
  };
}

/**
 * Several limits over several identity parts, all or nothing, in one round trip.
 *
 * @example
 * const api = createCompoundRatelimit(redis, { name: 'api', keys, limits: [
 *   { name: 'burst', limit: 10, windowMs: 1000 },
 *   { name: 'daily', limit: 1000, windowMs: 86_400_000, algorithm: 'fixedWindow', by: 'user' },
 * ] });
 * const r = await api.limit({ user: 'u1', ip: '203.0.113.7' }); // r.failed: ['burst'] when refused
 */
export function createCompoundRatelimit(redis: RatelimitRedis, options: { name: string; keys: KeySchema; limits: readonly CompoundLimit[] }): Limiter {
  const { name, keys, limits } = options;
  checkName('name', name);
  if (limits.length === 0) throw new TypeError('ratelimit: a compound policy needs at least one limit');
  for (const l of limits) {
    checkName('limit name', l.name);
    checkCount('limit', l.limit);
    checkCount('windowMs', l.windowMs);
  }
  if (new Set(limits.map((l) => l.name)).size !== limits.length) throw new TypeError('ratelimit: limit names must be unique');
  return scriptLimiter(redis, name, keys, limits, true);
}

/**
 * The rate-limit identity of a client address: IPv4 whole, IPv6 as its /64 (one subscriber usually
 * holds a whole /64, so per-address limits would be trivial to dodge). `undefined` when not an IP.
 *
 * @example
 * ipKey('2001:DB8:0:1:aaaa::1'); // "2001:db8:0:1::/64"
 */
export function ipKey(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  let ip = raw.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '');
  const v4 = /(?:^|:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (v4 && v4.slice(1).some((n) => Number(n) > 255)) return undefined;
  if (!ip.includes(':')) return v4 ? ip : undefined;
  if (v4) {
    if (/^(?:0{0,4}:){0,5}:?ffff:/.test(ip.slice(0, v4.index + 1))) return v4.slice(1).join('.'); // IPv4-mapped
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    ip = `${ip.slice(0, v4.index + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = ip.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves[1] ? halves[1].split(':') : [];
  const gap = 8 - head.length - tail.length;
  if (halves.length === 2 ? gap < 1 : gap !== 0) return undefined;
  const all = [...head, ...Array<string>(Math.max(gap, 0)).fill('0'), ...tail];
  if (!all.every((h) => /^[0-9a-f]{1,4}$/.test(h))) return undefined;
  return `${all.slice(0, 4).map((h) => parseInt(h, 16).toString(16)).join(':')}::/64`;
}

/**
 * Response headers for a result, following draft-ietf-httpapi-ratelimit-headers-10 (Sept 2025):
 * `RateLimit-Policy: "burst";q=10;w=1, "daily";q=1000;w=86400` and `RateLimit: "burst";r=3;t=1, …`
 * (one item per limit, the tightest identity part; w and t in whole seconds, rounded up), plus
 * optionally the legacy `X-RateLimit-Limit/Remaining/Reset` (reset in epoch seconds).
 */
export function rateLimitHeaders(result: LimitResult, legacy = false, now = Date.now()): Record<string, string> {
  const byName = new Map<string, PolicyState>();
  for (const p of result.policies) {
    const seen = byName.get(p.name);
    if (!seen || p.remaining < seen.remaining) byName.set(p.name, p);
  }
  const items = [...byName.values()];
  const headers: Record<string, string> = {
    'RateLimit-Policy': items.map((p) => `"${p.name}";q=${p.limit};w=${Math.max(1, Math.ceil(p.windowMs / 1000))}`).join(', '),
    RateLimit: items.map((p) => `"${p.name}";r=${p.remaining};t=${Math.max(0, Math.ceil((p.reset - now) / 1000))}`).join(', '),
  };
  if (legacy) {
    headers['X-RateLimit-Limit'] = String(result.limit);
    headers['X-RateLimit-Remaining'] = String(result.remaining);
    headers['X-RateLimit-Reset'] = String(Math.ceil(result.reset / 1000));
  }
  return headers;
}

export interface RateLimitEnv {
  Variables: {
    /** Set by the authentication middleware; read by `key: 'user'`. */
    user?: string | { id: string | number };
    /** The check's result, for handlers. */
    rateLimit?: LimitResult;
  };
}

type KeyFn = (c: Context<RateLimitEnv>) => string | Record<string, string | undefined> | undefined | Promise<string | Record<string, string | undefined> | undefined>;

/** Replaces the middleware's option of the same name (`limit` as in {@link LimitOptions}). */
export interface RateLimitOverride {
  limit?: number | Readonly<Record<string, number>>;
  cost?: number;
  failure?: 'open' | 'closed';
  timeoutMs?: number;
}

export interface RateLimitOptions {
  limiter: Limiter;
  /**
   * Who is counted: `ip` (CF-Connecting-IP, IPv6 by /64), `user` (`c.var.user`), `apikey` (the
   * header `apiKeyHeader`, stored as a SHA-256 prefix, never raw), a function (a string becomes part
   * `key`), or several (`['user', 'ip']`, parts of one identity). With no part found, the IP counts;
   * without CF-Connecting-IP (not behind Cloudflare) every such request shares `ip:unknown`.
   * @default 'ip'
   */
  key?: 'ip' | 'user' | 'apikey' | KeyFn | readonly ('ip' | 'user' | 'apikey' | KeyFn)[];
  /** @default 'x-api-key' */
  apiKeyHeader?: string;
  /** Units per request. @default 1 */
  cost?: number | ((c: Context<RateLimitEnv>) => number | Promise<number>);
  /**
   * `routes` by `"METHOD /path"` or `"/path"` (the matched route's pattern, e.g. `/items/:id`);
   * `keys` by identity before hashing (`"apikey:<key>"`, `"user:u1"`, `"ip:203.0.113.7"`, or the
   * whole `"user:u1|ip:…"`). A key override wins over a route override, field by field.
   * @default {}
   */
  overrides?: { routes?: Readonly<Record<string, RateLimitOverride>>; keys?: Readonly<Record<string, RateLimitOverride>> };
  /** When Redis fails or misses `timeoutMs`: let the request through or answer 503. @default 'open' */
  failure?: 'open' | 'closed';
  /** @default 1000 */
  timeoutMs?: number;
  /** `RateLimit-Policy` and `RateLimit`. @default true */
  headers?: boolean;
  /** `X-RateLimit-*` too. @default false */
  legacyHeaders?: boolean;
  /**
   * For safe methods (GET, HEAD), run the handler while the check is in flight instead of after it,
   * so the check's round trip overlaps the handler's own (with `createRedis(env, { batch: 'task' })`
   * they share one HTTP request). A refusal then replaces the handler's response with the 429. Only
   * for handlers without side effects beyond caching; unsafe methods always wait for the check.
   * @default false
   */
  concurrent?: boolean;
}

async function sha256Hex(value: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(value));
  return Array.from(new Uint8Array(digest).slice(0, 16), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function identify(c: Context<RateLimitEnv>, key: NonNullable<RateLimitOptions['key']>, apiKeyHeader: string): Promise<Record<string, string>> {
  const out: Record<string, string | undefined> = {};
  const ip = () => ipKey(c.req.header('cf-connecting-ip')) ?? 'unknown';
  for (const k of typeof key === 'string' || typeof key === 'function' ? [key] : key) {
    if (typeof k === 'function') {
      const v = await k(c);
      Object.assign(out, typeof v === 'string' ? { key: v } : v);
    } else if (k === 'ip') out.ip = ip();
    else if (k === 'user') {
      const u = c.get('user');
      out.user = u !== null && typeof u === 'object' ? String(u.id) : u;
    } else out.apikey = c.req.header(apiKeyHeader);
  }
  const found = Object.fromEntries(Object.entries(out).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''));
  return Object.keys(found).length > 0 ? found : { ip: ip() };
}

/**
 * Hono middleware: one round trip per request, headers from draft-ietf-httpapi-ratelimit-headers-10,
 * 429 problem+json with `Retry-After`, `pending` to `waitUntil`. On failure (Redis error or budget
 * spent) `failure: 'open'` serves the request with `RateLimit-Status: unavailable` and warns once
 * per outage (no identities or keys in the log); `'closed'` answers 503 problem+json.
 *
 * @example
 * app.use('/api/*', rateLimit({ limiter, key: ['user', 'ip'], legacyHeaders: true,
 *   overrides: { routes: { 'POST /api/search': { cost: 5 } }, keys: { 'apikey:gold': { limit: 1000 } } } }));
 */
export function rateLimit(options: RateLimitOptions) {
  const { limiter, key = 'ip', apiKeyHeader = 'x-api-key', cost = 1, overrides = {}, failure = 'open', timeoutMs = DEFAULT_TIMEOUT_MS, headers = true, legacyHeaders = false, concurrent = false } = options;
  let warned = false;
  return createMiddleware<RateLimitEnv>(async function rateLimit(c, next) {
    const raw = await identify(c, key, apiKeyHeader);
    const route = routePath(c, -1);
    const flat = flatten(raw);
    const o: RateLimitOverride = {
      ...(overrides.routes?.[`${c.req.method} ${route}`] ?? overrides.routes?.[route]),
      ...[flat, ...Object.entries(raw).map(([k, v]) => `${k}:${v}`)].map((id) => overrides.keys?.[id]).find(Boolean),
    };
    const identity = raw.apikey === undefined ? raw : { ...raw, apikey: await sha256Hex(raw.apikey) };
    const units = o.cost ?? (typeof cost === 'function' ? await cost(c) : cost);
    let result: LimitResult;
    const check = limiter.limit(identity, { cost: units, timeoutMs: o.timeoutMs ?? timeoutMs, ...(o.limit !== undefined ? { limit: o.limit } : {}) });
    // The handler runs now; whether its response stands is decided below, once the check is back.
    const handled = concurrent && (c.req.method === 'GET' || c.req.method === 'HEAD') ? next() : undefined;
    try {
      [result] = await Promise.all([check, handled]);
      warned = false;
    } catch (err) {
      if (!(err instanceof RateLimitError)) throw err;
      const mode = o.failure ?? failure;
      if (!warned) {
        warned = true;
        // The cause's message quotes the command (keys, identities): log only its class.
        const cause = err.reason === 'timeout' ? 'timeout' : classifyRedisError(err.cause);
        console.warn(`[ratelimit] ${err.message} (${cause}); failing ${mode} until it answers again`);
      }
      if (mode === 'closed') {
        const refusal = problemResponse('unavailable', { instance: c.req.path, detail: 'Rate limiting is unavailable; try again shortly.', headers: { 'Retry-After': '1', 'RateLimit-Status': 'unavailable' } });
        if (!handled) return refusal;
        await handled.catch(() => undefined);
        c.res = refusal;
        return;
      }
      if (handled) await handled;
      else await next();
      c.header('RateLimit-Status', 'unavailable');
      return;
    }
    try {
      c.executionCtx.waitUntil(result.pending);
    } catch {
      await result.pending; // no ExecutionContext (not on Workers): nothing would keep it alive
    }
    c.set('rateLimit', result);
    const h = headers ? rateLimitHeaders(result, legacyHeaders) : {};
    if (!result.success) {
      const retryAfter = Math.max(1, Math.ceil((result.reset - Date.now()) / 1000));
      const refusal = problemResponse('rate_limited', {
        instance: c.req.path,
        detail: `Rate limit ${result.failed.map((n) => `"${n}"`).join(', ')} exceeded; retry in ${retryAfter} s.`,
        headers: { ...h, 'Retry-After': String(retryAfter) },
        extensions: { failed: result.failed, retryAfter },
      });
      if (!handled) return refusal;
      c.res = refusal;
      return;
    }
    if (!handled) await next();
    // A route's own limiter (login) may already have answered with its fields: the draft's fields
    // are lists, so this policy joins them rather than replacing them; legacy headers stay the inner one's.
    for (const [name, value] of Object.entries(h)) {
      const inner = c.res.headers.get(name);
      if (inner === null) c.header(name, value);
      else if (name === 'RateLimit' || name === 'RateLimit-Policy') c.header(name, `${inner}, ${value}`);
    }
  });
}

/**
 * `rateLimit` for authentication routes: fails CLOSED by default, so an outage cannot open the door
 * to password guessing.
 *
 * @example
 * app.post('/auth/login', authRateLimit({ limiter: login, key: 'ip' }), loginHandler);
 */
export function authRateLimit(options: RateLimitOptions) {
  return rateLimit({ failure: 'closed', ...options });
}
