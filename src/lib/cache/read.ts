/**
 * The read path: getOrLoad (single flight across isolates by the read script's lock, within the
 * isolate by ./flights.ts), the stale-while-revalidate refresh, and getMany. Fails open: a Redis
 * failure is reported and the loader's value served.
 */
import { CacheError } from '../errors.ts';
import { runScript } from '../script.ts';
import { sleep } from '../util.ts';
import { asCacheError, readEntries, readEntry, timed, type CacheContext } from './context.ts';
import { body, judge, type Read, type Verdict } from './envelope.ts';
import { freshFor, resolvePolicy, type Policy } from './policy.ts';
import { SCRIPTS } from './scripts.ts';
import type { CacheLookup, CacheReason, CacheResult, LoadOptions, ReadOptions } from './types.ts';

/** Stores a loaded value if our lock still stands, then frees it; never rejects: failures are reported. */
async function store(ctx: CacheContext, key: string, token: string, value: unknown, versions: Map<string, string>, p: Policy): Promise<void> {
  try {
    const { ttl, stale } = freshFor(value, p);
    const mode = ttl > 0 ? 'load' : 'drop';
    await timed(runScript(ctx.redis, SCRIPTS.write, ctx.slot(key), [mode, token, '', ttl, stale, body(value, versions), p.leaseMs]), p.timeoutMs, 'write', key);
  } catch (err) {
    ctx.report(asCacheError(err, 'write', key));
  }
}

/** Frees our lock (a load that failed); never rejects. */
async function drop(ctx: CacheContext, key: string, token: string, p: Policy): Promise<void> {
  await timed(runScript(ctx.redis, SCRIPTS.write, ctx.slot(key), ['drop', token, '', 0, 0, '', 0]), p.timeoutMs, 'drop', key).catch((err: unknown) =>
    ctx.report(asCacheError(err, 'drop', key)),
  );
}

/** Runs the loader under our lock and writes its value back (in `waitUntil` with a ctx). */
async function fill<T>(ctx: CacheContext, key: string, loader: () => T | Promise<T>, o: LoadOptions<T>, p: Policy, token: string, versions: Map<string, string>, reason: CacheReason): Promise<CacheResult<T>> {
  let value: T;
  try {
    value = await loader();
  } catch (err) {
    const release = drop(ctx, key, token, p);
    if (o.ctx) o.ctx.waitUntil(release);
    else await release;
    throw err;
  }
  const write = store(ctx, key, token, value, versions, p);
  if (o.ctx) o.ctx.waitUntil(write);
  else await write;
  const now = Date.now();
  return { value, status: 'miss', reason, createdAt: now, freshUntil: now + (value == null ? p.negativeTtl : p.ttl) };
}

/** A stale hit whose lock we took: refresh it in the background (never rejects). */
function refresh<T>(ctx: CacheContext, key: string, loader: () => T | Promise<T>, o: LoadOptions<T>, p: Policy, token: string, row: Read): void {
  const work = (async () => {
    let value: T;
    try {
      value = await loader();
    } catch (err) {
      ctx.report(new CacheError('loader', 'refresh', key, { cause: err }));
      return drop(ctx, key, token, p);
    }
    return store(ctx, key, token, value, row.versions, p);
  })();
  // Without a ctx the refresh still runs; it never rejects, and Workers may cut it short.
  if (o.ctx) o.ctx.waitUntil(work);
}

/** One key's load across isolates: read (taking the lock if due), serve, wait for another isolate, or fill. */
export async function load<T>(ctx: CacheContext, key: string, loader: () => T | Promise<T>, o: LoadOptions<T>): Promise<CacheResult<T>> {
  const p = resolvePolicy(ctx.defaults, o);
  const tags = o.tags ?? [];
  const token = crypto.randomUUID();
  const deadline = Date.now() + p.waitMs;
  let bad = '';
  let why: 'absent' | 'tag' | 'invalid' | undefined;
  let delay = 20;
  let waited = false;
  for (;;) {
    let r: Read;
    try {
      r = await readEntry(ctx, key, tags, p, 'read', { token, bad });
    } catch (err) {
      ctx.report(asCacheError(err, 'read', key));
      const value = await loader();
      const now = Date.now();
      return { value, status: 'miss', reason: 'error', createdAt: now, freshUntil: now + p.ttl };
    }
    // The entry already found unusable is not judged (nor reported) again.
    const v: Verdict<T> = bad !== '' && r.c === bad && why ? { state: why } : await judge<T>(r, tags, o.validate, () => ctx.report(new CacheError('invalid', 'read', key)));
    if (v.state === 'fresh' || v.state === 'stale') {
      if (v.state === 'stale' && r.got === 1) refresh(ctx, key, loader, o, p, token, r);
      return { value: v.value, status: v.state === 'fresh' ? 'hit' : 'stale', reason: v.state === 'fresh' && waited ? 'waited' : v.state, createdAt: v.env.c, freshUntil: v.env.f };
    }
    why ??= v.state;
    if (r.got === 1) return fill(ctx, key, loader, o, p, token, r.versions, why);
    // An unusable entry the script took for fresh: ask again, naming it, so the lock is tried.
    bad = r.raw == null ? '' : r.c;
    if (Date.now() >= deadline) return fill(ctx, key, loader, o, p, token, r.versions, 'wait-timeout');
    if (r.got === 0) {
      waited = true;
      await sleep(Math.min(delay * (0.75 + Math.random() / 2), Math.max(0, deadline - Date.now())));
      delay = Math.min(delay * 1.5, 250);
    }
  }
}

/**
 * getOrLoad: joins a load of the same key already running in this isolate (for up to `waitMs`: a
 * load stuck in a cancelled request is not awaited forever), else starts one and registers it.
 */
export async function getOrLoad<T>(ctx: CacheContext, key: string, loader: () => T | Promise<T>, options: LoadOptions<T>): Promise<CacheResult<T>> {
  const [id] = ctx.slot(key);
  const running = ctx.inflight.get(id) as Promise<CacheResult<T>> | undefined;
  if (running) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const gaveUp = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), resolvePolicy(ctx.defaults, options).waitMs)));
    const r = await Promise.race([running, gaveUp]).finally(() => timer !== undefined && clearTimeout(timer));
    if (!r) return load(ctx, key, loader, options);
    return r.status === 'miss' ? { ...r, status: 'hit', reason: 'joined' } : r;
  }
  const mine = load(ctx, key, loader, options);
  ctx.inflight.add(id, mine, options.tags ?? []);
  return mine;
}

/** Several keys in one round trip, each judged on its own; no loader, no lock. */
export async function getMany<T>(ctx: CacheContext, list: readonly string[], o: ReadOptions<T> = {}): Promise<CacheLookup<T>[]> {
  const p = resolvePolicy(ctx.defaults, o);
  const tags = o.tags ?? [];
  let reads: Read[];
  try {
    reads = await readEntries(ctx, list, tags, p, 'getMany');
  } catch (err) {
    ctx.report(asCacheError(err, 'getMany'));
    return list.map((key) => ({ key, value: undefined, status: 'miss', reason: 'error' }));
  }
  return Promise.all(
    list.map(async (key, i): Promise<CacheLookup<T>> => {
      const v = await judge<T>(reads[i] ?? { raw: null, now: 0, got: -1, c: '-', versions: new Map() }, tags, o.validate, () => ctx.report(new CacheError('invalid', 'read', key)));
      if (v.state === 'fresh' || v.state === 'stale') {
        return { key, value: v.value, status: v.state === 'fresh' ? 'hit' : 'stale', reason: v.state, createdAt: v.env.c, freshUntil: v.env.f };
      }
      return { key, value: undefined, status: 'miss', reason: v.state };
    }),
  );
}
