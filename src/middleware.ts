/**
 * App-wide middleware, in the order src/index.ts mounts it: request observation → body limit → CSRF
 * guard → services → default rate limit → session. None keeps state of its own: the per-env services (src/services.ts)
 * arrive on `c.var.services`, and the library's middlewares take them from there.
 */
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { getCookie } from 'hono/cookie';
import { createMiddleware } from 'hono/factory';
import { requestId } from 'hono/request-id';
import { rateLimit, session } from 'edge-redis/hono';
import type { AppEnv, SessionShape } from './env.ts';
import { AppError } from './errors.ts';
import { services, withRedisSpend, type RedisSpend } from './services.ts';

/** Largest JSON body any route takes. */
export const MAX_BODY_BYTES = 64 * 1024;

/** 413 problem+json past {@link MAX_BODY_BYTES}, whether or not Content-Length was sent. */
export const limitBody = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: () => {
    throw new AppError('payload_too_large', { detail: `The body is over ${MAX_BODY_BYTES} bytes.` });
  },
});

/** The session cookie: `__Host-sid` (Secure) in production; `sid` over plain http in development. */
export function sessionCookie(env: Env): { name: string; secure: boolean } {
  return env.APP_ENV === 'development' ? DEV_COOKIE : PROD_COOKIE;
}
const DEV_COOKIE = { name: 'sid', secure: false };
const PROD_COOKIE = { name: '__Host-sid', secure: true };

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * CSRF: an unsafe request that carries the session cookie must come from this origin. Browsers send
 * `Origin` (and `Sec-Fetch-Site`) on cross-site requests; a request from another site, or one that
 * names no origin at all while relying on the cookie, is refused with 403. Requests without the
 * cookie (API clients with a bearer token, curl) are not cookie-authenticated and pass.
 */
export const csrfGuard = createMiddleware<AppEnv>(async function csrfGuard(c, next) {
  if (UNSAFE.has(c.req.method) && getCookie(c, sessionCookie(c.env).name) !== undefined) {
    const site = c.req.header('sec-fetch-site');
    const origin = c.req.header('origin');
    const self = new URL(c.req.url).origin;
    const sameSite = site === undefined || site === 'same-origin' || site === 'none';
    if (!sameSite || (origin !== undefined && origin !== self)) {
      throw new AppError('forbidden', { detail: 'Cross-site request refused: this request carries the session cookie but comes from another origin.' });
    }
  }
  await next();
});

/** `c.var.services`: this env's services (built on the env's first request, then reused). */
export const provideServices = createMiddleware<AppEnv>(async function provideServices(c, next) {
  c.set('services', services(c.env));
  await next();
});

/**
 * `API_RATE_LIMIT` requests per minute per IP (IPv6 by /64) on every route; fails open. Reads run
 * alongside their check (one round trip for check + handler); writes wait for it.
 */
export const defaultRateLimit = rateLimit<AppEnv>({ limiter: (c) => c.var.services.apiLimiter, concurrent: true });

// The cookie differs by environment only, so both middlewares are built once, here.
const devSessions = session<SessionShape, AppEnv>({ store: (c) => c.var.services.sessions, cookie: DEV_COOKIE });
const prodSessions = session<SessionShape, AppEnv>({ store: (c) => c.var.services.sessions, cookie: PROD_COOKIE });

/** The lazy session (edge-redis/session) on `c.var.session`, with this environment's cookie ({@link sessionCookie}). */
export const sessions: MiddlewareHandler<AppEnv> = (c, next) => (c.env.APP_ENV === 'development' ? devSessions : prodSessions)(c, next);

const assignRequestId = requestId();

/**
 * Observation of every request:
 * - `X-Request-Id`: the caller's when it sent a sane one (hono/request-id: ≤ 255 of [\w\-=]), else a
 *   new UUID; on `c.var.requestId` and echoed in the response;
 * - `Server-Timing: redis;dur=<ms>;desc="<trips> trips, <commands> commands", app;dur=<ms>`, so the
 *   browser's dev tools show what a request cost in Redis (only what happened before the response:
 *   `waitUntil` work comes after);
 * - one JSON log line per request (Workers Logs index its fields): request id, method, route,
 *   status, duration, and the Redis round trips, commands, time and failed trips it spent. The path
 *   is the route's pattern, so ids, tokens and query strings stay out of the log.
 */
export const observeRequest = createMiddleware<AppEnv>(async function observeRequest(c, next) {
  const spend: RedisSpend = { trips: 0, commands: 0, ms: 0, failed: 0 };
  const started = performance.now();
  await withRedisSpend(spend, () => assignRequestId(c, next));
  const ms = performance.now() - started;
  const redisMs = Math.round(spend.ms * 10) / 10;
  c.res.headers.append('Server-Timing', `redis;dur=${redisMs};desc="${spend.trips} trips, ${spend.commands} commands", app;dur=${Math.round(ms * 10) / 10}`);
  console.log(
    JSON.stringify({
      msg: 'request',
      requestId: c.var.requestId,
      method: c.req.method,
      route: c.req.routePath,
      status: c.res.status,
      ms: Math.round(ms * 10) / 10,
      redis: { trips: spend.trips, commands: spend.commands, ms: redisMs, failed: spend.failed },
    }),
  );
});
