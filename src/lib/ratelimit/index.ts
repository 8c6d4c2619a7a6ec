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
 * Failure policy: the core only rejects with `RateLimitError` (`unavailable` or `timeout`, cause
 * attached); whether that lets the request through (fail open) or answers 503 (fail closed) is the
 * middleware's choice (`edge-redis/hono`, `rateLimit({ failure })`).
 *
 * Layout: ./types.ts (the API), ./limiter.ts (identities, results, budget, the exact limiter),
 * ./scripts.ts (its Lua), ./upstash.ts (the `@upstash/ratelimit` algorithms), ./lru.ts (the block
 * cache), ./ip.ts (client addresses as identities). The middleware and the `RateLimit` headers
 * live in `edge-redis/hono`.
 *
 * @example
 * const limiter = createRatelimit({ redis: createRedis(env, { timeoutMs: 500, retries: 1 }), keys, name: 'api', algorithm: 'slidingLog', limit: 100, windowMs: 60_000 });
 * const { success, reset } = await limiter.limit({ ip: '203.0.113.7' });
 */
import { RateLimitError } from '../errors.ts';
import { wholeNumber } from '../util.ts';
import { checkName, scriptLimiter } from './limiter.ts';
import type { CompoundRatelimitOptions, Limiter, RatelimitOptions } from './types.ts';
import { upstashLimiter } from './upstash.ts';

export { RateLimitError };
export { ipKey } from './ip.ts';
export { LruMap } from './lru.ts';
export { SCRIPTS } from './scripts.ts';
export type * from './types.ts';

/**
 * A limiter for one limit. No I/O here: Upstash instances are made on first use, one per distinct
 * limit (overrides), each with its own bounded block cache.
 *
 * @example
 * const login = createRatelimit({ redis, keys, name: 'login', algorithm: 'slidingLog', limit: 5, windowMs: 900_000 });
 * const { success, reset } = await login.limit({ ip, user: username });
 */
export function createRatelimit(options: RatelimitOptions): Limiter {
  const { redis, name, keys } = options;
  checkName('name', name);
  wholeNumber('ratelimit: limit', options.limit);
  if (options.algorithm === 'tokenBucket') {
    wholeNumber('ratelimit: refillRate', options.refillRate);
    wholeNumber('ratelimit: intervalMs', options.intervalMs);
  } else wholeNumber('ratelimit: windowMs', options.windowMs);
  if (options.algorithm === 'slidingLog') return scriptLimiter(redis, name, keys, [{ name, limit: options.limit, windowMs: options.windowMs }], false);
  return upstashLimiter(options);
}

/**
 * Several limits over several identity parts, all or nothing, in one round trip.
 *
 * @example
 * const api = createCompoundRatelimit({ redis, keys, name: 'api', limits: [
 *   { name: 'burst', limit: 10, windowMs: 1000 },
 *   { name: 'daily', limit: 1000, windowMs: 86_400_000, algorithm: 'fixedWindow', by: 'user' },
 * ] });
 * const r = await api.limit({ user: 'u1', ip: '203.0.113.7' }); // r.failed: ['burst'] when refused
 */
export function createCompoundRatelimit({ redis, keys, name, limits }: CompoundRatelimitOptions): Limiter {
  checkName('name', name);
  if (limits.length === 0) throw new TypeError('ratelimit: a compound policy needs at least one limit');
  for (const l of limits) {
    checkName('limit name', l.name);
    wholeNumber('ratelimit: limit', l.limit);
    wholeNumber('ratelimit: windowMs', l.windowMs);
  }
  if (new Set(limits.map((l) => l.name)).size !== limits.length) throw new TypeError('ratelimit: limit names must be unique');
  return scriptLimiter(redis, name, keys, limits, true);
}
