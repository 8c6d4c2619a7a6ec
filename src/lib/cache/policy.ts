/**
 * The cache's timing and robustness settings, resolved once per call from the cache's defaults and
 * the call's own options into one checked object.
 */

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

const DEFAULTS = { ttl: 60_000, staleTtl: 0, jitter: 0.1, timeoutMs: 500, waitMs: 3_000, leaseMs: 10_000 };

/** A resolved policy: every field set and checked. */
export type Policy = Readonly<typeof DEFAULTS & { negativeTtl: number }>;

/** Later layers win, field by field; `undefined` fields do not count. Throws RangeError on a bad value. */
export function resolvePolicy(...layers: CachePolicy[]): Policy {
  const set = layers.map((l) => Object.fromEntries(Object.entries(l).filter(([, v]) => v !== undefined)));
  const p = Object.assign({}, DEFAULTS, ...set) as typeof DEFAULTS & { negativeTtl?: number };
  const out = { ...p, negativeTtl: p.negativeTtl ?? Math.min(p.ttl, 30_000) };
  const ok = (n: number, min: number) => Number.isFinite(n) && n >= min;
  if (!ok(out.ttl, 1) || !ok(out.staleTtl, 0) || !ok(out.negativeTtl, 0) || !ok(out.timeoutMs, 1) || !ok(out.waitMs, 0) || !ok(out.leaseMs, 1) || !(out.jitter >= 0 && out.jitter < 1)) {
    throw new RangeError('cache: ttl, timeoutMs and leaseMs must be >= 1 ms, staleTtl, negativeTtl and waitMs >= 0, jitter in [0, 1)');
  }
  return out;
}

/** The fresh time of a value written now: jittered, or the negative TTL for null/undefined. */
export function freshFor(value: unknown, p: Policy): { ttl: number; stale: number } {
  if (value == null) return { ttl: p.negativeTtl, stale: 0 };
  return { ttl: Math.max(1, Math.round(p.ttl * (1 + p.jitter * (2 * Math.random() - 1)))), stale: p.staleTtl };
}
