/**
 * Response headers of the patterns' results: the IETF `RateLimit` fields of a limit check and the
 * `X-Cache` / `Age` of a cache read.
 */
import type { CacheResult } from '../cache/index.ts';
import type { LimitResult, PolicyState } from '../ratelimit/index.ts';

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


/**
 * Response headers for a cache result: `X-Cache` (HIT, STALE or MISS; MISS only where the loader
 * ran) and `Age` in seconds.
 *
 * @example
 * return c.json(r.value, 200, cacheHeaders(r));
 */
export function cacheHeaders(result: Pick<CacheResult<unknown>, 'status' | 'createdAt'>, now = Date.now()): Record<string, string> {
  return { 'X-Cache': result.status.toUpperCase(), Age: String(Math.max(0, Math.floor((now - result.createdAt) / 1000))) };
}
