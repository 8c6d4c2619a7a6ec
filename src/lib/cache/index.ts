/**
 * Cache-aside for Workers over HTTP Redis, counted in round trips: fresh/stale windows refreshed in
 * `waitUntil`, single flight across isolates (a lock taken by the read itself) and within one, tag
 * invalidation by versions never reused, checked reads, negative caching, TTL jitter, invalidation events.
 *
 * When Redis forgets (./tags.ts, ./scripts.ts), a missing tag version, tombstone or lock is "unknown", never
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
 * Redis. Writes the caller asks for (`set`, `update`, `invalidate*`) reject with a `CacheError`
 * (`edge-redis` errors: code `unavailable`, `timeout` or `conflict`): a lost invalidation is
 * something the caller must know about.
 *
 * Layout: ./types.ts (the API), ./policy.ts (timing), ./envelope.ts (the stored entry),
 * ./scripts.ts (Lua), ./context.ts (the one read round trip), ./read.ts (getOrLoad, single
 * flight, refresh), ./write.ts (set, update, invalidation), ./tags.ts, ./flights.ts.
 *
 * @example
 * const cache = createCache({ redis: createRedis(c.env), keys, defaults: { ttl: 3_600_000, staleTtl: 60_000 } });
 * const r = await cache.getOrLoad(`product:${id}`, () => loadProduct(id), { tags: ['products'], ctx: c.executionCtx });
 * return c.json(r.value, 200, cacheHeaders(r)); // cacheHeaders: edge-redis/hono
 */
import { CacheError } from '../errors.ts';
import type { CacheContext } from './context.ts';
import { flightsOf } from './flights.ts';
import { resolvePolicy } from './policy.ts';
import { getMany, getOrLoad } from './read.ts';
import type { Cache, CacheOptions, CacheResult } from './types.ts';
import { invalidate, invalidatePattern, invalidateTag, update, write } from './write.ts';

export { CacheError };
export type { Validator } from './envelope.ts';
export type { CachePolicy } from './policy.ts';
export { SCRIPTS } from './scripts.ts';
export type * from './types.ts';

/** The default reporter: op, code and the cause's class; never the key or the cause's message. */
function warn(error: CacheError): void {
  console.warn(`[cache] ${error.message}${error.cause instanceof Error ? ` (${error.cause.name})` : ''}`);
}

/**
 * Builds a cache. Does no I/O.
 *
 * @example
 * const cache = createCache({ redis, keys: keySchema({ app: 'shop', env: 'prod' }), defaults: { ttl: 3_600_000 } });
 * const { value, status } = await cache.getOrLoad('product:42', () => db.product(42), { tags: ['products'], ctx });
 */
export function createCache({ redis, keys, defaults = {}, onError = warn, channel = keys.key('cache', 'events') }: CacheOptions): Cache {
  resolvePolicy(defaults); // fail at construction on a bad default
  const ctx: CacheContext = {
    redis,
    keys,
    defaults,
    inflight: flightsOf<CacheResult<unknown>>(redis),
    report(error) {
      try {
        onError(error);
      } catch {
        // a throwing reporter must not turn fail-open into a failure
      }
    },
    slot: (key) => [keys.slotted('cache', key), keys.slotted('cache', key, 'lock')],
    tagKey: (tag) => keys.key('cache', 'tag', tag),
    publish: (event) => redis.publish(channel, JSON.stringify(event)),
  };
  return {
    getOrLoad: (key, loader, options = {}) => getOrLoad(ctx, key, loader, options),
    getMany: (list, options) => getMany(ctx, list, options),
    async get(key, options) {
      const [one] = await getMany(ctx, [key], options);
      return one ?? { key, value: undefined, status: 'miss', reason: 'absent' };
    },
    async set(key, value, options = {}) {
      await write(ctx, key, value, options, '');
    },
    update: (key, fn, options = {}) => update(ctx, key, fn, options),
    invalidate: (key) => invalidate(ctx, key),
    invalidateTag: (tags) => invalidateTag(ctx, tags),
    invalidatePattern: (pattern, options) => invalidatePattern(ctx, pattern, options),
  };
}
