/**
 * The library's one error family. Every pattern throws an {@link EdgeRedisError} subclass for an
 * infrastructure failure, never an HTTP error: what a failure means to a client (503, Retry-After,
 * the words a client reads) is decided in one place, `edge-redis/hono` (`edgeRedisProblem`).
 * Expected outcomes (a refused rate limit, a lock held elsewhere, a replayed idempotency key) are
 * values, not errors; a caller's mistake (a bad option, an empty key) is a TypeError or RangeError.
 *
 * The message names only the pattern, the operation and the code (`cache invalidate: timeout`):
 * keys, identities and Redis's own message (which quotes the command) stay on the error as fields
 * and `cause`, for a log that chooses what to print.
 *
 * @example
 * try {
 *   await locks.acquire('order:7');
 * } catch (err) {
 *   if (err instanceof EdgeRedisError && err.code === 'unavailable') return retryLater();
 *   throw err;
 * }
 */

/**
 * - `unavailable`: Redis (or the REST endpoint in front of it) failed: the state is unknown.
 * - `timeout`: the operation's time budget ran out first (it may still land).
 * - `config`: a missing or malformed setting (the message names it, never its value).
 * - `invalid`: a stored value is unusable (cache: not an envelope, or failed `validate`).
 * - `conflict`: a compare-and-set lost every attempt (cache `update`).
 * - `busy`: a lock stayed held past the wait (`withLock`).
 * - `lost`: a held lock was lost (the abort reason `withLock` hands its function).
 * - `loader`: the caller's loader failed in the background (cache refresh).
 * - `handler`: the caller's handler failed (write-behind drain).
 */
export type EdgeRedisErrorCode = 'unavailable' | 'timeout' | 'config' | 'invalid' | 'conflict' | 'busy' | 'lost' | 'loader' | 'handler';

/** Which part of the library raised it. */
export type EdgeRedisPattern = 'redis' | 'cache' | 'ratelimit' | 'session' | 'lock' | 'idempotency' | 'leaderboard' | 'pubsub' | 'login-throttle' | 'writebehind';

export interface EdgeRedisErrorOptions {
  /** The underlying failure (the client's error, the loader's, a timeout's). */
  cause?: unknown;
}

/** The base of every error the library throws for a failure that is not the caller's mistake. */
export class EdgeRedisError<C extends EdgeRedisErrorCode = EdgeRedisErrorCode> extends Error {
  override name = 'EdgeRedisError';
  readonly code: C;
  readonly pattern: EdgeRedisPattern;
  /** The operation that failed (`read`, `acquire`, `limit`, …). */
  readonly op: string;

  constructor(pattern: EdgeRedisPattern, code: C, op: string, options: EdgeRedisErrorOptions = {}) {
    super(`${pattern} ${op}: ${code}`, options.cause === undefined ? {} : { cause: options.cause });
    this.pattern = pattern;
    this.code = code;
    this.op = op;
  }
}

/** A missing or malformed Redis setting (`createRedis`). The message names the variable, never its value. */
export class RedisConfigError extends EdgeRedisError<'config'> {
  override name = 'RedisConfigError';
  constructor(message: string, options: EdgeRedisErrorOptions = {}) {
    super('redis', 'config', 'config', options);
    this.message = message;
  }
}

/** A cache failure; `key` is the cache key concerned, never printed by the default reporter. */
export class CacheError extends EdgeRedisError<'unavailable' | 'timeout' | 'invalid' | 'loader' | 'conflict'> {
  override name = 'CacheError';
  readonly key: string | undefined;
  constructor(code: CacheError['code'], op: string, key?: string, options: EdgeRedisErrorOptions = {}) {
    super('cache', code, op, options);
    this.key = key;
  }
}

/** A rate-limit check that could not be made: Redis failed (`unavailable`) or the budget ran out (`timeout`). */
export class RateLimitError extends EdgeRedisError<'unavailable' | 'timeout'> {
  override name = 'RateLimitError';
  /** The limiter's name. */
  readonly limiter: string;
  constructor(code: RateLimitError['code'], limiter: string, options: EdgeRedisErrorOptions = {}) {
    super('ratelimit', code, 'limit', options);
    this.limiter = limiter;
  }
}

/** Sessions could not be loaded or saved: fail closed. */
export class SessionError extends EdgeRedisError<'unavailable'> {
  override name = 'SessionError';
  constructor(op: string, options: EdgeRedisErrorOptions = {}) {
    super('session', 'unavailable', op, options);
  }
}

/** Redis failed (`unavailable`: nothing is held), a lock stayed busy (`busy`) or a held one was lost (`lost`). */
export class LockError extends EdgeRedisError<'unavailable' | 'busy' | 'lost'> {
  override name = 'LockError';
  readonly resource: string | undefined;
  constructor(code: LockError['code'], op: string, resource?: string, options: EdgeRedisErrorOptions = {}) {
    super('lock', code, op, options);
    this.resource = resource;
  }
}

/** Redis failed: whether the key is taken is unknown, so nothing is claimed. */
export class IdempotencyError extends EdgeRedisError<'unavailable'> {
  override name = 'IdempotencyError';
  constructor(op: string, options: EdgeRedisErrorOptions = {}) {
    super('idempotency', 'unavailable', op, options);
  }
}

/** Redis failed: the scores are unknown (read) or the increment may not have happened (write). */
export class LeaderboardError extends EdgeRedisError<'unavailable'> {
  override name = 'LeaderboardError';
  constructor(op: string, options: EdgeRedisErrorOptions = {}) {
    super('leaderboard', 'unavailable', op, options);
  }
}

/** A subscription could not be opened (Redis or the REST endpoint is down, or too slow to confirm). */
export class PubSubError extends EdgeRedisError<'unavailable'> {
  override name = 'PubSubError';
  constructor(op: string, options: EdgeRedisErrorOptions = {}) {
    super('pubsub', 'unavailable', op, options);
  }
}

/** Redis failed: whether the login attempt may go on is unknown, so it may not. */
export class LoginThrottleError extends EdgeRedisError<'unavailable'> {
  override name = 'LoginThrottleError';
  constructor(op: string, options: EdgeRedisErrorOptions = {}) {
    super('login-throttle', 'unavailable', op, options);
  }
}

/** What a drain had done before it stopped (see `edge-redis/writebehind`). */
export interface DrainProgress {
  batches: number;
  acked: number;
  deadLettered: string[];
  redelivered: number;
}

/** A Redis failure (`unavailable`) or a handler that threw (`handler`), with the progress made before it. */
export class WriteBehindError extends EdgeRedisError<'unavailable' | 'handler'> {
  override name = 'WriteBehindError';
  /** What the drain had done before it stopped. */
  readonly report: DrainProgress | undefined;
  constructor(code: WriteBehindError['code'], op: 'enqueue' | 'drain' | 'snapshot', options: EdgeRedisErrorOptions & { report?: DrainProgress } = {}) {
    super('writebehind', code, op, options);
    this.report = options.report;
  }
}
