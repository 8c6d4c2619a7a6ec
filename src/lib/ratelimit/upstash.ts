/**
 * `slidingWindow` | `fixedWindow` | `tokenBucket` through `@upstash/ratelimit` 2.2, with a bounded
 * block cache (./lru.ts), analytics off and its own timeout off (it always fails open; the budget of
 * ./limiter.ts applies our policy instead). Their cost semantics are Upstash's: the sliding window
 * admits while one unit is left whatever the cost, the fixed window counts refused calls too.
 */
import { Ratelimit } from '@upstash/ratelimit';
import { DEFAULT_TIMEOUT_MS, flatten, limitFor, toResult, withBudget } from './limiter.ts';
import { LruMap } from './lru.ts';
import type { Limiter, RatelimitOptions } from './types.ts';

/** The Upstash algorithms; a `slidingLog` limiter is ./limiter.ts's `scriptLimiter` instead. */
export function upstashLimiter(options: RatelimitOptions): Limiter {
  const { redis, name, keys, cacheSize = 10_000 } = options;
  let windowMs: number;
  let algorithm: (limit: number) => ReturnType<typeof Ratelimit.fixedWindow>;
  if (options.algorithm === 'tokenBucket') {
    const { refillRate, intervalMs, limit: size } = options;
    // A per-key limit scales the refill rate too, so the bucket still refills in the same time,
    // which is what RateLimit-Policy reports as its window.
    windowMs = Math.ceil((intervalMs * size) / refillRate);
    algorithm = (limit) => Ratelimit.tokenBucket(Math.max(1, Math.round((refillRate * limit) / size)), `${intervalMs}ms`, limit);
  } else {
    const kind = options.algorithm === 'fixedWindow' ? 'fixedWindow' : 'slidingWindow';
    const window = options.windowMs;
    windowMs = window;
    algorithm = (limit) => Ratelimit[kind](limit, `${window}ms`);
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
