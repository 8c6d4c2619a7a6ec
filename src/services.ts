/**
 * The app's Redis-backed services, built from `env` on first use and shared by every request of the
 * isolate that sees the same `env` (no I/O here: Workers forbid it at global scope, and nothing
 * talks to Redis before a command is sent).
 *
 * One Redis client in `batch: 'task'` mode serves them all, so the independent commands a request
 * starts together (rate limit, session, cache read) leave in one HTTP request.
 */
import { createCache, type Cache } from './lib/cache.ts';
import { keySchema, type KeySchema } from './lib/keys.ts';
import { createLocks, type Locks } from './lib/lock.ts';
import { createRatelimit, type Limiter } from './lib/ratelimit.ts';
import { createRedis, type RedisClient } from './lib/redis.ts';
import { sessionStore, type SessionStore } from './lib/session.ts';

export interface Services {
  redis: RedisClient;
  keys: KeySchema;
  cache: Cache;
  locks: Locks;
  sessions: SessionStore;
  /** `API_RATE_LIMIT` requests per minute per IP, on every route. */
  apiLimiter: Limiter;
}

const built = new WeakMap<Env, Services>();

/** A positive whole number from a var, or the default (a bad value is a deploy error, said once). */
export function positiveInt(raw: string | undefined, name: string, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new TypeError(`${name} must be a positive whole number`);
  return n;
}

/** The services for this `env` (c.env). */
export function services(env: Env): Services {
  let s = built.get(env);
  if (s) return s;
  const redis = createRedis(env, { batch: 'task' });
  const keys = keySchema({ app: env.REDIS_KEY_APP || 'shop', env: env.APP_ENV || 'dev' });
  s = {
    redis,
    keys,
    cache: createCache({ redis, keys, defaults: { ttl: 3_600_000, staleTtl: 300_000 } }),
    locks: createLocks({ redis, keys }),
    sessions: sessionStore(redis, { keys }),
    apiLimiter: createRatelimit(redis, { name: 'api', keys, algorithm: 'slidingWindow', limit: positiveInt(env.API_RATE_LIMIT, 'API_RATE_LIMIT', 100), windowMs: 60_000 }),
  };
  built.set(env, s);
  return s;
}
