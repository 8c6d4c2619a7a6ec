/**
 * The rate-limit middleware: one check per request (one round trip, or none when the block cache
 * knows), the IETF `RateLimit` fields on every answer, `pending` to `waitUntil`, and the failure
 * policy: `failure: 'open'` serves the request marked `RateLimit-Status: unavailable` and warns once
 * per outage (no identities or keys in the log), `'closed'` answers 503. What a refusal or an outage
 * answers is a hook (`onRefused`, `onUnavailable`), by default problem+json (./problem.ts).
 *
 * Who is counted is the app's to say (`identify`); the middleware reads no app variable. Without
 * `identify`, or when it names nobody, the client address counts: `CF-Connecting-IP`, the header
 * Cloudflare sets on every request to a Worker, IPv6 by /64 ({@link clientIp}).
 *
 * @example
 * app.use('/api/*', rateLimit({
 *   limiter,
 *   identify: (c) => ({ user: c.var.userId, ip: clientIp(c) }),
 *   overrides: { routes: { 'POST /api/search': { cost: 5 } }, keys: { 'apikey:gold': { limit: 1000 } } },
 * }));
 */
import type { Context, Env, MiddlewareHandler } from 'hono';
import { createMiddleware } from 'hono/factory';
import { routePath } from 'hono/route';
import { RateLimitError } from '../errors.ts';
import { ipKey, type Identity, type Limiter, type LimitResult } from '../ratelimit/index.ts';
import { classifyRedisError } from '../redis.ts';
import { digest, hex } from '../util.ts';
import { rateLimitHeaders } from './headers.ts';
import { edgeRedisProblem, problemResponse } from './problem.ts';

/** The context variable the middleware sets: the check's result, for handlers. */
export interface RateLimitEnv {
  Variables: { rateLimit?: LimitResult };
}

/** The client's address as a rate-limit identity: `CF-Connecting-IP`, IPv4 whole, IPv6 by /64; `unknown` without it (not behind Cloudflare). */
export function clientIp(c: Context): string {
  return ipKey(c.req.header('cf-connecting-ip')) ?? 'unknown';
}

/** Replaces the middleware's option of the same name (`limit` as in `LimitOptions`). */
export interface RateLimitOverride {
  limit?: number | Readonly<Record<string, number>>;
  cost?: number;
  failure?: 'open' | 'closed';
  timeoutMs?: number;
}

/** The context the hooks receive: the app's, with the variable this middleware sets. */
export type RateLimitContext<E extends Env = Env> = Context<E & RateLimitEnv>;

export interface RateLimitOptions<E extends Env = Env> {
  /** The limiter, or a function of the context choosing one (e.g. the env's, built once per env). */
  limiter: Limiter | ((c: RateLimitContext<E>) => Limiter);
  /**
   * Who is counted: a string (part `key`) or named parts (`{ user, ip }`: parts of one identity,
   * counted separately by a compound limiter). Parts left undefined or empty are dropped; with none
   * left, the client address counts.
   * @default (c) => ({ ip: clientIp(c) })
   */
  identify?: (c: RateLimitContext<E>) => Identity | undefined | Promise<Identity | undefined>;
  /** Identity parts stored as a SHA-256 prefix, never raw (secrets such as API keys). @default ['apikey'] */
  hashParts?: readonly string[];
  /** Units per request. @default 1 */
  cost?: number | ((c: RateLimitContext<E>) => number | Promise<number>);
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
   * they share one HTTP request). A refusal then replaces the handler's response. Only for handlers
   * without side effects beyond caching; unsafe methods always wait for the check.
   * @default false
   */
  concurrent?: boolean;
  /**
   * The answer to a refused request; `headers` are the `RateLimit` fields and `Retry-After`.
   * @default 429 problem+json naming the limits that refused (`failed`) and `retryAfter`
   */
  onRefused?: (c: RateLimitContext<E>, result: LimitResult, headers: Record<string, string>) => Response | Promise<Response>;
  /** The answer when the check failed and the policy is closed. @default 503 problem+json with Retry-After */
  onUnavailable?: (c: RateLimitContext<E>, error: RateLimitError) => Response | Promise<Response>;
}

const DEFAULT_TIMEOUT_MS = 1000;

const defaultRefused = (c: Context, result: LimitResult, headers: Record<string, string>) => {
  const retryAfter = Number(headers['Retry-After']);
  return problemResponse(
    { code: 'rate_limited', detail: `Rate limit ${result.failed.map((n) => `"${n}"`).join(', ')} exceeded; retry in ${retryAfter} s.`, headers, extensions: { failed: result.failed, retryAfter } },
    c.req.path,
  );
};

const defaultUnavailable = (c: Context, error: RateLimitError) => {
  const problem = edgeRedisProblem(error);
  return problemResponse({ ...problem, headers: { ...problem.headers, 'RateLimit-Status': 'unavailable' } }, c.req.path);
};

/** The identity's parts with a value; the client address when there are none. */
async function identityOf<E extends Env>(c: RateLimitContext<E>, identify: RateLimitOptions<E>['identify']): Promise<Record<string, string>> {
  const raw = identify ? await identify(c) : undefined;
  const named = typeof raw === 'string' ? { key: raw } : (raw ?? {});
  const found = Object.fromEntries(Object.entries(named).filter((e): e is [string, string] => typeof e[1] === 'string' && e[1] !== ''));
  return Object.keys(found).length > 0 ? found : { ip: clientIp(c) };
}

/**
 * Hono middleware: one round trip per request, `RateLimit` fields, the refusal by `onRefused`
 * (with `Retry-After`), `pending` to `waitUntil`, the failure policy of `failure`.
 */
export function rateLimit<E extends Env = Env>(options: RateLimitOptions<E>): MiddlewareHandler<E & RateLimitEnv> {
  const {
    limiter, identify, hashParts = ['apikey'], cost = 1, overrides = {}, failure = 'open', timeoutMs = DEFAULT_TIMEOUT_MS,
    headers = true, legacyHeaders = false, concurrent = false,
  } = options;
  const onRefused: NonNullable<RateLimitOptions<E>['onRefused']> = options.onRefused ?? defaultRefused;
  const onUnavailable: NonNullable<RateLimitOptions<E>['onUnavailable']> = options.onUnavailable ?? defaultUnavailable;
  let warned = false;
  return createMiddleware<E & RateLimitEnv>(async function rateLimit(c, next) {
    const raw = await identityOf(c, identify);
    const route = routePath(c, -1);
    const flat = Object.entries(raw).map(([k, v]) => `${k}:${v}`);
    const o: RateLimitOverride = {
      ...(overrides.routes?.[`${c.req.method} ${route}`] ?? overrides.routes?.[route]),
      ...[flat.join('|'), ...flat].map((id) => overrides.keys?.[id]).find(Boolean),
    };
    const identity: Record<string, string> = {};
    for (const [k, v] of Object.entries(raw)) identity[k] = hashParts.includes(k) ? hex((await digest('SHA-256', v)).slice(0, 16)) : v;
    const units = o.cost ?? (typeof cost === 'function' ? await cost(c) : cost);
    const use = typeof limiter === 'function' ? limiter(c) : limiter;
    let result: LimitResult;
    const check = use.limit(identity, { cost: units, timeoutMs: o.timeoutMs ?? timeoutMs, ...(o.limit !== undefined ? { limit: o.limit } : {}) });
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
        const cause = err.code === 'timeout' ? 'timeout' : classifyRedisError(err.cause);
        console.warn(`[ratelimit] "${err.limiter}" ${err.message} (${cause}); failing ${mode} until it answers again`);
      }
      if (mode === 'closed') {
        const refusal = await onUnavailable(c, err);
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
      const refusal = await onRefused(c, result, { ...h, 'Retry-After': String(retryAfter) });
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
 * app.post('/auth/login', authRateLimit({ limiter: login }), loginHandler);
 */
export function authRateLimit<E extends Env = Env>(options: RateLimitOptions<E>): MiddlewareHandler<E & RateLimitEnv> {
  return rateLimit<E>({ failure: 'closed', ...options });
}
