/**
 * App-wide middleware, in the order src/index.ts mounts it: body limit → CSRF guard → default rate
 * limit → session. Each is built once per `env` (see services.ts), not per request.
 */
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { getCookie } from 'hono/cookie';
import type { AppEnv } from './env.ts';
import { AppError } from './lib/errors.ts';
import { rateLimit } from './lib/ratelimit.ts';
import { session } from './lib/session.ts';
import { services } from './services.ts';

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
  return env.APP_ENV === 'development' ? { name: 'sid', secure: false } : { name: '__Host-sid', secure: true };
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * CSRF: an unsafe request that carries the session cookie must come from this origin. Browsers send
 * `Origin` (and `Sec-Fetch-Site`) on cross-site requests; a request from another site, or one that
 * names no origin at all while relying on the cookie, is refused with 403. Requests without the
 * cookie (API clients with a bearer token, curl) are not cookie-authenticated and pass.
 */
export const csrfGuard: MiddlewareHandler<AppEnv> = async function csrfGuard(c, next) {
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
};

const perEnv = new WeakMap<Env, { limit: MiddlewareHandler<AppEnv>; session: MiddlewareHandler<AppEnv> }>();

function built(env: Env) {
  let m = perEnv.get(env);
  if (!m) {
    const s = services(env);
    m = {
      // Reads run alongside their check (one round trip for check + handler); writes wait for it.
      limit: rateLimit({ limiter: s.apiLimiter, key: 'ip', concurrent: true }) as unknown as MiddlewareHandler<AppEnv>,
      session: session({ redis: s.redis, keys: s.keys, cookie: sessionCookie(env) }) as unknown as MiddlewareHandler<AppEnv>,
    };
    perEnv.set(env, m);
  }
  return m;
}

/** `API_RATE_LIMIT` requests per minute per IP (IPv6 by /64) on every route; fails open. */
export const defaultRateLimit: MiddlewareHandler<AppEnv> = (c: Context<AppEnv>, next) => built(c.env).limit(c, next);

/** The lazy session (src/lib/session.ts) on `c.get('session')`. */
export const sessions: MiddlewareHandler<AppEnv> = (c: Context<AppEnv>, next) => built(c.env).session(c, next);
