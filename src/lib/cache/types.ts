/** The public types of the cache (./index.ts builds it). */
import type { CacheError } from '../errors.ts';
import type { Validator } from './envelope.ts';
import type { CachePolicy } from './policy.ts';
import type { KeySchema } from '../keys.ts';
import type { RedisCommands } from '../redis.ts';

/** Options of one read. */
export interface ReadOptions<T> extends CachePolicy {
  /** Tags the entry was written with; read and written together (pass the same on every call). @default [] */
  tags?: readonly string[];
  /** Checks a stored value before it is served; a failure counts as a miss and is reported. */
  validate?: Validator<T>;
}

/** Options of getOrLoad. */
export interface LoadOptions<T> extends ReadOptions<T> {
  /**
   * `c.executionCtx`: stale refreshes and the write after a miss run in its `waitUntil`. Without it
   * the write is awaited and a refresh runs detached (Workers may cut it short; its lock then lapses).
   */
  ctx?: { waitUntil(promise: Promise<unknown>): void };
}

/** `hit`: served from Redis (or from a load another request ran); `stale`: served stale while one refresh runs; `miss`: this call ran the loader. */
export type CacheStatus = 'hit' | 'stale' | 'miss';
/** Why: fresh | stale | absent | tag (invalidated) | invalid (failed `validate`) | joined (in-isolate dedupe) | waited (another isolate loaded) | wait-timeout | error (Redis failed). */
export type CacheReason = 'fresh' | 'stale' | 'absent' | 'tag' | 'invalid' | 'joined' | 'waited' | 'wait-timeout' | 'error';

/** What getOrLoad answers. `createdAt`/`freshUntil` are ms since the epoch (estimated for a miss). */
export interface CacheResult<T> {
  value: T;
  status: CacheStatus;
  reason: CacheReason;
  createdAt: number;
  freshUntil: number;
}

/** One key of getMany: a miss has no value. */
export interface CacheLookup<T> {
  key: string;
  value: T | undefined;
  status: CacheStatus;
  reason: CacheReason;
  createdAt?: number;
  freshUntil?: number;
}

/** The JSON message published on the cache's channel for every invalidation. */
export type CacheEvent =
  | { type: 'invalidate'; key: string; at: number }
  | { type: 'invalidateTag'; tag: string; at: number }
  | { type: 'invalidatePattern'; pattern: string; at: number };

export interface Cache {
  /**
   * The value of `key`, from Redis or from `loader`; never throws for Redis (the loader's own errors
   * propagate). Concurrent calls for a key in this isolate (same client) share the first one's load
   * and options, for up to `waitMs`.
   * Across isolates the read takes a lock (SET NX PX in the script): the others serve the stale value
   * if there is one, else poll with backoff for up to `waitMs` and then run the loader themselves
   * (reason `wait-timeout`). `status` is `miss` only on the call that ran the loader.
   */
  getOrLoad<T>(key: string, loader: () => T | Promise<T>, options?: LoadOptions<T>): Promise<CacheResult<T>>;
  /** Several keys in one round trip, each with its own staleness; no loader, no lock. */
  getMany<T>(keys: readonly string[], options?: ReadOptions<T>): Promise<CacheLookup<T>[]>;
  /** getMany of one key. */
  get<T>(key: string, options?: ReadOptions<T>): Promise<CacheLookup<T>>;
  /** Write-through: 1 round trip (2 with tags, whose versions are read first). */
  set<T>(key: string, value: T, options?: Omit<ReadOptions<T>, 'validate'>): Promise<void>;
  /** Read, apply `fn`, compare-and-set; retried up to 5 times on a concurrent write. 2 round trips. */
  update<T>(key: string, fn: (current: T | undefined) => T | Promise<T>, options?: ReadOptions<T>): Promise<T>;
  /** Delete on write, fence loads in flight, publish the event: 1 round trip. */
  invalidate(key: string): Promise<void>;
  /** New versions for the tags (every entry stamped with an older one is dead, stale or not) and publish: 1 round trip. */
  invalidateTag(tags: string | readonly string[]): Promise<void>;
  /**
   * The slow path: SCAN MATCH the entries whose key matches `pattern` (a glob over cache keys, e.g.
   * `user:123:*`) and UNLINK them page by page, with their lock keys (fencing loads in flight),
   * bounded by `maxKeys` and `maxIterations`. Pass the returned `cursor` back to continue when
   * `complete` is false. On Redis Cluster SCAN covers one node only.
   */
  invalidatePattern(pattern: string, options?: PatternOptions): Promise<{ deleted: number; complete: boolean; cursor: string }>;
}

export interface PatternOptions {
  /** SCAN COUNT hint per page. @default 500 */
  count?: number;
  /** Stop after this many keys. @default 1_000 */
  maxKeys?: number;
  /** Stop after this many SCAN calls. @default 100 */
  maxIterations?: number;
  /** Resume from a previous call's cursor. @default "0" */
  cursor?: string;
}

/** The commands the cache sends. */
export type CacheRedis = RedisCommands<'evalsha' | 'eval' | 'set' | 'unlink' | 'publish' | 'scan'>;

export interface CacheOptions {
  /** The client: the commands of {@link CacheRedis}. */
  redis: CacheRedis;
  keys: KeySchema;
  /** Policy of every call unless overridden. */
  defaults?: CachePolicy;
  /** Receives every fail-open event. @default console.warn of op, code and the cause's class */
  onError?: (error: CacheError) => void;
  /** Pub/sub channel of {@link CacheEvent}s. @default keys.key('cache', 'events') */
  channel?: string;
}
