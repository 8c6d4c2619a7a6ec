/**
 * What the cache's operations share: the client, where each key lives, the reporter, the in-isolate
 * loads, and the one round trip every read makes (the read script per key plus the tag versions).
 */
import { CacheError } from '../errors.ts';
import type { KeySchema } from '../keys.ts';
import { runScript } from '../script.ts';
import { withTimeout } from '../util.ts';
import type { Read } from './envelope.ts';
import type { Flights } from './flights.ts';
import type { CachePolicy, Policy } from './policy.ts';
import { SCRIPTS } from './scripts.ts';
import { readTagVersions } from './tags.ts';
import type { CacheEvent, CacheRedis, CacheResult } from './types.ts';

export interface CacheContext {
  redis: CacheRedis;
  keys: KeySchema;
  defaults: CachePolicy;
  inflight: Flights<CacheResult<unknown>>;
  /** Reports a fail-open event; never throws. */
  report(error: CacheError): void;
  /** The entry key and its lock key (one hash slot). */
  slot(key: string): [entry: string, lock: string];
  tagKey(tag: string): string;
  publish(event: CacheEvent): Promise<number>;
}

/** Races a Redis call against the policy's budget: past it, a `timeout` CacheError. */
export function timed<T>(work: Promise<T>, ms: number, op: string, key?: string): Promise<T> {
  return withTimeout(work, ms, () => new CacheError('timeout', op, key));
}

/** Any failure as a CacheError (`unavailable` unless it already is one). */
export const asCacheError = (err: unknown, op: string, key?: string): CacheError =>
  err instanceof CacheError ? err : new CacheError('unavailable', op, key, { cause: err });

/** What the read takes when it may take the single-flight lock: our token, and the createdAt of an entry found unusable. */
export interface LockAttempt {
  token: string;
  bad: string;
}

/** One round trip: the read script per key (taking the lock when `lock` is given) and the tag versions. */
export async function readEntries(ctx: CacheContext, list: readonly string[], tags: readonly string[], p: Policy, op: string, lock?: LockAttempt): Promise<Read[]> {
  const args = [lock ? 1 : 0, lock?.token ?? '', p.leaseMs, lock?.bad ?? ''];
  const entries = Promise.all(list.map((k) => runScript<[unknown, number, number, unknown]>(ctx.redis, SCRIPTS.read, ctx.slot(k), args)));
  const [rows, versions] = await timed(Promise.all([entries, readTagVersions(ctx.redis, ctx.tagKey, tags)]), p.timeoutMs, op, list.length === 1 ? list[0] : undefined);
  return rows.map(([raw, now, got, c]) => ({ raw, now, got, c: String(c), versions }));
}

export async function readEntry(ctx: CacheContext, key: string, tags: readonly string[], p: Policy, op: string, lock?: LockAttempt): Promise<Read> {
  const [r] = await readEntries(ctx, [key], tags, p, op, lock);
  if (!r) throw new TypeError('cache: the read had no reply');
  return r;
}
