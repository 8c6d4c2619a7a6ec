/** The public types of the rate limiters (./index.ts builds them). */
import type { RedisCommands } from '../redis.ts';
import type { KeySchema } from '../keys.ts';

/** What the limiters need from `@upstash/redis` (get/set only because Upstash's type asks for them). */
export type RatelimitRedis = RedisCommands<'evalsha' | 'eval' | 'get' | 'set'>;

/** Who is limited: one string, or named parts (`{ user: 'u1', ip: '203.0.113.7' }`). */
export type Identity = string | Readonly<Record<string, string | undefined>>;

export interface PolicyState {
  /** The limit's name (the limiter's name for single limiters). */
  name: string;
  /** Compound only: which identity part this state counts (`ip`, `user`, …). */
  by?: string;
  success: boolean;
  limit: number;
  remaining: number;
  /** Epoch ms when room frees up (sliding log, token bucket) or the window ends. */
  reset: number;
  windowMs: number;
}

/** `@upstash/ratelimit`'s response shape plus which limits refused and every limit's state. */
export interface LimitResult {
  success: boolean;
  /** The binding limit: a refusing one (latest reset), else the one with the least remaining. */
  limit: number;
  remaining: number;
  /** Epoch ms. */
  reset: number;
  /** Hand to `waitUntil`. */
  pending: Promise<unknown>;
  /** `cacheBlock`: refused from the in-memory block cache, no round trip. */
  reason?: 'cacheBlock';
  /** Names of the limits that refused; empty on success. */
  failed: string[];
  policies: PolicyState[];
}

export interface LimitOptions {
  /** Units this call consumes (Upstash algorithms accept negative refunds). @default 1 */
  cost?: number;
  /** A per-call limit: a number for a one-limit limiter, else by limit name. @default the configured limit */
  limit?: number | Readonly<Record<string, number>>;
  /** Deadline for the whole call, client retries included; past it a `RateLimitError` (`timeout`). @default 1000 */
  timeoutMs?: number;
}

export interface Limiter {
  readonly name: string;
  /** One round trip; refusals are values, infrastructure failures reject with `RateLimitError`. */
  limit(identity: Identity, options?: LimitOptions): Promise<LimitResult>;
}

export type RatelimitOptions = {
  redis: RatelimitRedis;
  keys: KeySchema;
  /** Appears in keys and in the `RateLimit` headers: `[\w.-]+`. */
  name: string;
  /** Max identifiers in each Upstash block cache (one cache per distinct limit); `false` = none. @default 10_000 */
  cacheSize?: number | false;
} & (
  | { algorithm: 'slidingLog' | 'slidingWindow' | 'fixedWindow'; limit: number; windowMs: number }
  | { algorithm: 'tokenBucket'; /** bucket size */ limit: number; refillRate: number; intervalMs: number }
);

export interface CompoundLimit {
  name: string;
  limit: number;
  windowMs: number;
  /** @default 'slidingLog' */
  algorithm?: 'slidingLog' | 'fixedWindow';
  /** Count only this identity part (e.g. `user`); missing parts are skipped. @default every part */
  by?: string;
}

/** Several limits over several identity parts, all or nothing. */
export interface CompoundRatelimitOptions {
  redis: RatelimitRedis;
  keys: KeySchema;
  /** The policy's name: its keys share this hash tag (one Cluster slot). */
  name: string;
  limits: readonly CompoundLimit[];
}
