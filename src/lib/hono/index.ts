/**
 * `edge-redis/hono`: the patterns' Hono adapters, and the one place their errors get an HTTP
 * meaning. Needs `hono` (an optional peer dependency: only this entry imports it).
 *
 * - `rateLimit`, `authRateLimit`: the rate-limit middleware (./ratelimit.ts), `clientIp`.
 * - `session`: the session middleware (./session.ts).
 * - `rateLimitHeaders`, `cacheHeaders`: response headers of the patterns' results (./headers.ts).
 * - `edgeRedisProblem`, `problemResponse`, `onEdgeRedisError`: library errors as problem+json (./problem.ts).
 *
 * @example
 * import { onEdgeRedisError, rateLimit, session } from 'edge-redis/hono';
 * app.onError(onEdgeRedisError);
 * app.use(rateLimit({ limiter }), session({ store: sessions }));
 */
export { cacheHeaders, rateLimitHeaders } from './headers.ts';
export { describeError, edgeRedisProblem, onEdgeRedisError, PROBLEMS, problemBody, problemResponse, type Problem, type ProblemCode } from './problem.ts';
export { authRateLimit, clientIp, rateLimit, type RateLimitContext, type RateLimitEnv, type RateLimitOptions, type RateLimitOverride } from './ratelimit.ts';
export { session, type SessionCookieOptions, type SessionEnv, type SessionMiddlewareOptions, type SessionVariables } from './session.ts';
