/**
 * The composition root: every Redis-backed service of the app, built from `env` on first use and
 * shared by every request of the isolate that sees the same `env` (no I/O here: Workers forbid it
 * at global scope, and nothing talks to Redis before a command is sent). Requests reach them as
 * `c.var.services` (the `provideServices` middleware); the cron calls {@link services} itself.
 * This is the app's one per-env cache.
 *
 * One Redis client in `batch: 'task'` mode serves them all, so the independent commands a request
 * starts together (rate limit, session, cache read) leave in one HTTP request.
 */
import { createCache, type Cache } from 'edge-redis/cache';
import { createIdempotency, type Idempotency } from 'edge-redis/idempotency';
import { keySchema, type KeySchema } from 'edge-redis/keys';
import { createLeaderboard, type Leaderboard } from 'edge-redis/leaderboard';
import { createLocks, type Locks } from 'edge-redis/lock';
import { createLoginThrottle, type LoginThrottle } from 'edge-redis/login-throttle';
import { createRatelimit, type Limiter } from 'edge-redis/ratelimit';
import { AsyncLocalStorage } from 'node:async_hooks';
import { createRedis, type RedisClient, type RedisObserver } from 'edge-redis/redis';
import { createSessionStore, type SessionStore } from 'edge-redis/session';
import { createWriteBehind, type WriteBehind } from 'edge-redis/writebehind';

/** How long a claimed checkout key blocks duplicates, and how long a placed order is replayed for it. */
export const CHECKOUT_IDEMPOTENCY = { pendingMs: 30_000, ttlMs: 86_400_000 } as const;
/** The login limits' windows, and how long a device that logged in stays trusted (and its cookie lives). */
export const LOGIN_LIMITS = { sourceWindowMs: 900_000, accountWindowMs: 3_600_000, deviceTrustMs: 30 * 86_400_000 } as const;

export interface Services {
  redis: RedisClient;
  keys: KeySchema;
  cache: Cache;
  locks: Locks;
  sessions: SessionStore;
  /** `API_RATE_LIMIT` requests per minute per IP, on every route. */
  apiLimiter: Limiter;
  /** Failed logins per IP + username (`LOGIN_RATE_LIMIT`) and per account (`LOGIN_ACCOUNT_LIMIT`). */
  loginThrottle: LoginThrottle;
  /** Checkout's idempotency keys. */
  checkoutKeys: Idempotency;
  /** Product id → units sold. */
  bestSellers: Leaderboard;
  /** Page views, written behind to D1 by the cron. */
  views: WriteBehind;
  /** The vars the services were built with, parsed. */
  limits: { api: number; login: number; loginAccount: number };
}

const built = new WeakMap<Env, Services>();

/** A positive whole number from a var, or the default (a bad value is a deploy error, said once). */
export function positiveInt(raw: string | undefined, name: string, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) throw new TypeError(`${name} must be a positive whole number`);
  return n;
}

/** What one request spent on Redis: HTTP round trips, the commands they carried, their time. */
export interface RedisSpend {
  trips: number;
  commands: number;
  ms: number;
  /** Trips that failed (network, timeout, HTTP error). */
  failed: number;
}

const spending = new AsyncLocalStorage<RedisSpend>();

/** Runs `fn` (a request) with its own {@link RedisSpend}, which every app client adds to. */
export function withRedisSpend<T>(spend: RedisSpend, fn: () => T): T {
  return spending.run(spend, fn);
}

/**
 * The observer of every Redis client the app builds: adds each HTTP request to the spend of the
 * request it belongs to. A task-batched pipeline opens in the task of the request that issued its
 * first command, and AsyncLocalStorage follows it into its timer, so concurrent requests in one
 * isolate never mix. Outside a request (the cron) it does nothing.
 */
export const countRedis: RedisObserver = (trip) => {
  const spend = spending.getStore();
  if (spend === undefined) return;
  spend.trips += 1;
  spend.commands += trip.commands;
  spend.ms += trip.ms;
  if (!trip.ok) spend.failed += 1;
};

/** The services of this `env` (c.env). */
export function services(env: Env): Services {
  let s = built.get(env);
  if (s) return s;
  const redis = createRedis(env, { batch: 'task', observe: countRedis });
  const keys = keySchema({ app: env.REDIS_KEY_APP || 'shop', env: env.APP_ENV || 'dev' });
  const limits = {
    api: positiveInt(env.API_RATE_LIMIT, 'API_RATE_LIMIT', 100),
    login: positiveInt(env.LOGIN_RATE_LIMIT, 'LOGIN_RATE_LIMIT', 5),
    loginAccount: positiveInt(env.LOGIN_ACCOUNT_LIMIT, 'LOGIN_ACCOUNT_LIMIT', 20),
  };
  s = {
    redis,
    keys,
    limits,
    cache: createCache({ redis, keys, defaults: { ttl: 3_600_000, staleTtl: 300_000 } }),
    locks: createLocks({ redis, keys }),
    sessions: createSessionStore({ redis, keys }),
    apiLimiter: createRatelimit({ redis, keys, name: 'api', algorithm: 'slidingWindow', limit: limits.api, windowMs: 60_000 }),
    loginThrottle: createLoginThrottle({
      redis, keys, trustMs: LOGIN_LIMITS.deviceTrustMs,
      perSource: { limit: limits.login, windowMs: LOGIN_LIMITS.sourceWindowMs },
      perAccount: { limit: limits.loginAccount, windowMs: LOGIN_LIMITS.accountWindowMs },
    }),
    checkoutKeys: createIdempotency({ redis, keys, namespace: 'checkout', ...CHECKOUT_IDEMPOTENCY }),
    bestSellers: createLeaderboard({ redis, keys, name: 'best-sellers' }),
    views: createWriteBehind({ redis, keys, name: 'views', maxLen: 100_000 }),
  };
  built.set(env, s);
  return s;
}
