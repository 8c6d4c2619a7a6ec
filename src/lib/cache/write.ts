/**
 * The write path: write-through `set`, compare-and-set `update`, and the invalidations (one key, a
 * tag, a key pattern). Each write leaves the fence that stops loads already in flight from writing
 * an older value back: a tombstone on the entry's lock, a new tag version, or the lock keys deleted.
 * Writes reject with CacheError: a lost invalidation is something the caller must know about.
 */
import { CacheError } from '../errors.ts';
import { runScript } from '../script.ts';
import { asCacheError, readEntry, timed, type CacheContext } from './context.ts';
import { body, judge } from './envelope.ts';
import { freshFor, resolvePolicy } from './policy.ts';
import { SCRIPTS } from './scripts.ts';
import { bumpTagVersions, readTagVersions } from './tags.ts';
import type { PatternOptions, ReadOptions } from './types.ts';

/** One write (compare-and-set when `expect` is not ''); true when it was written. 1 round trip (2 with tags). */
export async function write(ctx: CacheContext, key: string, value: unknown, o: ReadOptions<unknown>, expect: string): Promise<boolean> {
  const p = resolvePolicy(ctx.defaults, o);
  try {
    const versions = o.tags?.length ? await timed(readTagVersions(ctx.redis, ctx.tagKey, o.tags), p.timeoutMs, 'set', key) : new Map<string, string>();
    const { ttl, stale } = freshFor(value, p);
    const n = await timed(runScript<number>(ctx.redis, SCRIPTS.write, ctx.slot(key), ['set', '', expect, Math.max(ttl, 1), stale, body(value, versions), p.leaseMs]), p.timeoutMs, 'set', key);
    return n === 1;
  } catch (err) {
    throw asCacheError(err, 'set', key);
  }
}

/** Read, apply `fn`, compare-and-set; up to 5 attempts. */
export async function update<T>(ctx: CacheContext, key: string, fn: (current: T | undefined) => T | Promise<T>, o: ReadOptions<T>): Promise<T> {
  const p = resolvePolicy(ctx.defaults, o);
  const tags = o.tags ?? [];
  for (let attempt = 0; attempt < 5; attempt++) {
    let r;
    try {
      r = await readEntry(ctx, key, tags, p, 'update');
    } catch (err) {
      throw asCacheError(err, 'update', key);
    }
    const v = await judge<T>(r, tags, o.validate, () => ctx.report(new CacheError('invalid', 'read', key)));
    const next = await fn(v.state === 'fresh' || v.state === 'stale' ? v.value : undefined);
    if (await write(ctx, key, next, o, r.c)) return next;
  }
  throw new CacheError('conflict', 'update', key);
}

/** Delete on write, fence loads in flight (a tombstone on the lock), publish: 1 round trip. */
export async function invalidate(ctx: CacheContext, key: string): Promise<void> {
  const [entry, lock] = ctx.slot(key);
  const p = resolvePolicy(ctx.defaults);
  ctx.inflight.drop({ id: entry });
  const work = Promise.all([ctx.redis.unlink(entry), ctx.redis.set(lock, '!', { px: p.leaseMs }), ctx.publish({ type: 'invalidate', key, at: Date.now() })]);
  await timed(work, p.timeoutMs, 'invalidate', key).catch((err: unknown) => {
    throw asCacheError(err, 'invalidate', key);
  });
}

/** New versions for the tags and publish: 1 round trip. */
export async function invalidateTag(ctx: CacheContext, tags: string | readonly string[]): Promise<void> {
  const list = typeof tags === 'string' ? [tags] : tags;
  const at = Date.now();
  ctx.inflight.drop({ tags: list });
  const work = Promise.all([...bumpTagVersions(ctx.redis, ctx.tagKey, list), ...list.map((tag) => ctx.publish({ type: 'invalidateTag', tag, at }))]);
  await timed(work, resolvePolicy(ctx.defaults).timeoutMs, 'invalidateTag').catch((err: unknown) => {
    throw asCacheError(err, 'invalidateTag');
  });
}

/**
 * SCAN MATCH page by page, UNLINK the entries and their lock keys (a load whose lock is gone cannot
 * write back), bounded by `maxKeys` and `maxIterations`; resumable by `cursor`.
 */
export async function invalidatePattern(ctx: CacheContext, pattern: string, { count = 500, maxKeys = 1_000, maxIterations = 100, cursor = '0' }: PatternOptions = {}): Promise<{ deleted: number; complete: boolean; cursor: string }> {
  const p = resolvePolicy(ctx.defaults);
  // Entries and their lock keys (after the '}'): a load whose lock is gone cannot write back.
  const entries = ctx.keys.slotted('cache', pattern);
  const match = `${entries}*`;
  ctx.inflight.drop({ glob: entries });
  const unlinks: Promise<number>[] = [];
  const fences: Promise<number>[] = [];
  let found = 0;
  let complete = false;
  try {
    for (let i = 0; i < maxIterations && found < maxKeys; i++) {
      const [next, keyPage] = await timed(ctx.redis.scan(cursor, { match, count }), p.timeoutMs, 'invalidatePattern');
      const page = keyPage.filter((k) => k.endsWith('}'));
      const locks = keyPage.filter((k) => !k.endsWith('}'));
      const batch = page.slice(0, maxKeys - found);
      // A cut page is scanned again on resume, so its cursor is not advanced.
      if (batch.length === page.length) cursor = String(next);
      if (batch.length > 0) unlinks.push(ctx.redis.unlink(...batch));
      if (locks.length > 0) fences.push(ctx.redis.unlink(...locks));
      found += batch.length;
      if (String(next) === '0' && batch.length === page.length) {
        complete = true;
        break;
      }
    }
    unlinks.push(ctx.publish({ type: 'invalidatePattern', pattern, at: Date.now() }).then(() => 0));
    const [counts] = await timed(Promise.all([Promise.all(unlinks), Promise.all(fences)]), p.timeoutMs, 'invalidatePattern');
    return { deleted: counts.reduce((a, b) => a + b, 0), complete, cursor: complete ? '0' : cursor };
  } catch (err) {
    void Promise.allSettled([...unlinks, ...fences]);
    throw asCacheError(err, 'invalidatePattern');
  }
}
