/**
 * Distributed locks over HTTP Redis: a lease lock with a fencing token, automatic extension with an
 * AbortSignal when the lock is lost, `await using`, a counting semaphore, and `inspect`.
 *
 * Every operation is one Lua script, so one round trip: acquire (per attempt), release, extend,
 * inspect, and each semaphore call. The fence is minted in the acquire script from a counter with no
 * TTL, so it strictly increases per resource while Redis remembers; pass it to the protected store and
 * reject writes carrying a smaller one (Kleppmann's fix for a holder paused past its lease).
 *
 * Redis may forget the counter (eviction, a restart without persistence, a lossy failover): it then
 * starts again at 1, below what the store has seen, and the store rightly refuses those writes. The
 * store is the authority, so it supplies the floor: `acquire(resource, { fenceFloor })` mints a fence
 * above `fenceFloor` and lifts the counter past it in the same script. The usual way is to try with
 * no floor, and when the store refuses a fence it has already passed, acquire again with the store's
 * fence as the floor and retry once (src/functions/checkout.ts does this); the happy path costs nothing.
 *
 * Failure policy: fail closed. If Redis cannot be reached, every call rejects with a `LockError`
 * of code `unavailable` (`cause` attached); nothing is ever reported as acquired. `withLock` rejects
 * with code `busy` when the lock stayed held, and aborts its function's signal with code `lost`.
 * Several locks at once without deadlock: `acquireAll` (./multilock.ts, exported here too).
 *
 * @example
 * const locks = createLocks({ redis: Redis.fromEnv(env), keys: keySchema({ app: 'shop', env: 'prod' }) });
 * await using lock = await locks.acquire('order:7', { waitMs: 2_000 });
 * if (lock) await db.write(order, { fence: lock.fence });
 */
import { LockError } from './errors.ts';
import type { KeySchema } from './keys.ts';
import type { RedisCommands } from './redis.ts';
import { LUA_NOW_MS, runScript, type LuaScript, type ReadWriteScript } from './script.ts';
import { digest, hex, randomBytes, wholeNumber } from './util.ts';

export { LockError };
export { acquireAll, releaseAll } from './multilock.ts';

/** The client surface this module uses: scripts only. */
export type LockRedis = RedisCommands<'evalsha' | 'eval'>;

// SHAs are pinned here and checked against sha1(src) and SCRIPT LOAD in the tests, so a warm call is
// one EVALSHA without hashing at run time.
export const SCRIPTS = {
  // The fence is minted from a counter with no TTL, lifted past the floor the store supplies.
  acquire: {
    src: `local lock, counter = KEYS[1], KEYS[2]
local token, leaseMs, floor = ARGV[1], ARGV[2], tonumber(ARGV[3])
local pttl = redis.call('PTTL', lock)
if pttl ~= -2 then return {0, pttl} end
local fence = redis.call('INCR', counter)
if fence <= floor then
  fence = floor + 1
  redis.call('SET', counter, string.format('%d', fence))
end
redis.call('SET', lock, string.format('%d:%s', fence, token), 'PX', leaseMs)
return {1, fence}`,
    sha: 'd04dbe5b5df55619b22b5bdfb31e440fe3617933',
  },
  release: {
    src: `local lock, value = KEYS[1], ARGV[1]
if redis.call('GET', lock) == value then return redis.call('DEL', lock) end
return 0`,
    sha: '974dc365967b6bb65d75d5b3f435b1b8389b5d3f',
  },
  extend: {
    src: `local lock, value, leaseMs = KEYS[1], ARGV[1], ARGV[2]
if redis.call('GET', lock) == value then return redis.call('PEXPIRE', lock, leaseMs) end
return 0`,
    sha: '992d2350bbf0ab48ae2c4a1630c5e905825f1d77',
  },
  inspect: {
    src: `local lock = KEYS[1]
local v = redis.call('GET', lock)
if not v then return {0} end
local fence, token = string.match(v, '^(%d+):(.+)$')
if not fence then return {1} end
return {1, tonumber(fence), redis.sha1hex(token), redis.call('PTTL', lock)}`,
    sha: 'd8dc27acf5bbd55a6ae3d6752370f23ee2cc0209',
  },
  // Semaphore: a sorted set of token -> expiry (ms, Redis clock). The key expires with its last permit.
  semAcquire: {
    src: `local permits = KEYS[1]
local limit, leaseMs, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
${LUA_NOW_MS}redis.call('ZREMRANGEBYSCORE', permits, '-inf', now)
local n = redis.call('ZCARD', permits)
if n >= limit then
  local first = redis.call('ZRANGE', permits, 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) - now}
end
redis.call('ZADD', permits, now + leaseMs, token)
redis.call('PEXPIREAT', permits, redis.call('ZRANGE', permits, -1, -1, 'WITHSCORES')[2])
return {1, n + 1}`,
    sha: 'afc1efea2e9cf9f1c9da49704007e9fa79e1d594',
  },
  // leaseMs = the new lease, or '0' to release. An expired permit is neither extended nor "released".
  semUpdate: {
    src: `local permits = KEYS[1]
local token, leaseMs = ARGV[1], ARGV[2]
${LUA_NOW_MS}local s = redis.call('ZSCORE', permits, token)
if not s then return 0 end
local live = tonumber(s) > now
if leaseMs == '0' or not live then
  redis.call('ZREM', permits, token)
  return live and 1 or 0
end
redis.call('ZADD', permits, 'XX', now + tonumber(leaseMs), token)
redis.call('PEXPIREAT', permits, redis.call('ZRANGE', permits, -1, -1, 'WITHSCORES')[2])
return 1`,
    sha: '8f751caac8496d8a87d95f96750929e423685cc5',
  },
} as const satisfies Record<string, LuaScript>;

export interface RetryOptions {
  /** @default 50 */
  minDelayMs?: number;
  /** @default 1000 */
  maxDelayMs?: number;
}

export interface AcquireOptions {
  /** Lease in ms; the lock frees itself after this unless extended. @default 10_000 */
  leaseMs?: number;
  /** How long to keep trying (a deadline, not a try count); 0 = one attempt. @default 0 */
  waitMs?: number;
  /** Jittered exponential backoff between attempts, capped by the holder's remaining lease. */
  retry?: RetryOptions;
  /** Aborts the wait; acquire rejects with `signal.reason` and holds nothing. */
  signal?: AbortSignal;
  /**
   * The fence is minted above this (and the counter lifted past it): the highest fence the protected
   * store has seen, after Redis lost its counter. A whole number ≥ 0. @default 0
   */
  fenceFloor?: number;
}

/** What a lock and a permit share. */
export interface Handle extends AsyncDisposable {
  /** Local-clock estimate (epoch ms), taken before the request left, so never later than the truth. */
  readonly expiresAt: number;
  /** Gives it up if still ours. `false` = not the owner anymore. Idempotent. */
  release(): Promise<boolean>;
  /** Sets the remaining lease to exactly `ms` if still ours. `false` = lost (or released). */
  extend(ms: number): Promise<boolean>;
}

export interface Lock extends Handle {
  readonly resource: string;
  /** 128 random bits (hex); proves ownership. Keep it private. */
  readonly token: string;
  /** Strictly increasing per resource: hand it to the protected store. */
  readonly fence: number;
  /** SHA-1 (hex) of the token: what `inspect` shows as `holder`. */
  readonly holder: string;
}

export interface Permit extends Handle {
  readonly token: string;
}

export interface LockInfo {
  held: boolean;
  fence?: number;
  /** SHA-1 (hex) of the holder's token; compare with `lock.holder`. */
  holder?: string;
  expiresInMs?: number;
}

export interface CreateLocksOptions {
  redis: LockRedis;
  keys: KeySchema;
  /** Defaults for every acquire: `leaseMs` 10 000, `waitMs` 0, `retry` 50–1000 ms. */
  defaults?: Omit<AcquireOptions, 'signal' | 'fenceFloor'>;
}

const newToken = () => hex(randomBytes(16));
const sha1Hex = async (text: string) => hex(await digest('SHA-1', text));

/** {@link runScript}; any failure becomes a LockError `unavailable`. */
async function run<T>(redis: LockRedis, op: string, script: ReadWriteScript, keys: string[], args: (string | number)[]): Promise<T> {
  try {
    return await runScript<T>(redis, script, keys, args);
  } catch (cause) {
    throw new LockError('unavailable', op, undefined, { cause });
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason); // aborted while the last attempt was in flight
    const done = () => { signal?.removeEventListener('abort', abort); resolve(); };
    const timer = setTimeout(done, ms);
    const abort = () => { clearTimeout(timer); reject(signal?.reason); };
    signal?.addEventListener('abort', abort, { once: true });
  });
}

/**
 * Retries `attempt` until it yields a handle or the deadline passes. `attempt` answers the handle or
 * the ms until the current holder's lease ends (negative: unknown), which caps the next sleep. An abort
 * during the in-flight attempt waits for it, so a handle it won is released before rejecting.
 */
async function poll<T extends Handle>(attempt: () => Promise<T | number>, waitMs: number, retry: RetryOptions, signal: AbortSignal | undefined): Promise<T | null> {
  signal?.throwIfAborted();
  const { minDelayMs = 50, maxDelayMs = 1_000 } = retry;
  const deadline = Date.now() + waitMs;
  for (let n = 0; ; n++) {
    const got = await attempt();
    if (typeof got !== 'number') {
      if (!signal?.aborted) return got;
      await got.release().catch(() => false); // the lease bounds a failed release
      throw signal.reason;
    }
    const left = deadline - Date.now();
    if (left <= 0) return null;
    // Full jitter in [min, min·2^(n+1)] keeps contenders from retrying in lockstep.
    const cap = Math.min(maxDelayMs, minDelayMs * 2 ** (n + 1));
    const backoff = minDelayMs + Math.random() * (cap - minDelayMs);
    await sleep(Math.max(1, Math.min(backoff, got >= 0 ? got + 1 : Infinity, left)), signal);
  }
}

/** What a lock and a permit share: an idempotent release, an exact-ms extend, `await using`. */
function handle(expiresAt: number, release: () => Promise<number>, extend: (ms: number) => Promise<number>): Handle {
  let released: Promise<boolean> | undefined;
  const h = {
    expiresAt,
    release() {
      released ??= release().then(
        (n) => n === 1,
        (err: unknown) => { released = undefined; throw err; }, // a failed release may be retried
      );
      return released;
    },
    async extend(ms: number) {
      wholeNumber('lock: ms', ms);
      if (released) return false;
      const sent = Date.now();
      const ok = (await extend(ms)) === 1;
      if (ok) h.expiresAt = sent + ms;
      return ok;
    },
    async [Symbol.asyncDispose]() { await h.release(); },
  };
  return h;
}

/**
 * Locks and semaphores on one client and key schema. No I/O until a method is called.
 *
 * @example
 * const locks = createLocks({ redis, keys });
 * const total = await locks.withLock('cart:42', async (signal, lock) => recompute(42, { signal, fence: lock.fence }), { waitMs: 5_000 });
 */
export function createLocks({ redis, keys, defaults = {} }: CreateLocksOptions) {
  const opts = (o: AcquireOptions) => ({
    leaseMs: wholeNumber('lock: leaseMs', o.leaseMs ?? defaults.leaseMs ?? 10_000),
    waitMs: Math.max(0, o.waitMs ?? defaults.waitMs ?? 0),
    retry: { ...defaults.retry, ...o.retry },
    signal: o.signal,
    fenceFloor: wholeNumber('lock: fenceFloor', o.fenceFloor ?? 0, { min: 0 }),
  });

  function makeLock(resource: string, key: string, token: string, fence: number, holder: string, expiresAt: number): Lock {
    const value = `${fence}:${token}`;
    return Object.assign(handle(expiresAt, () => run(redis, 'release', SCRIPTS.release, [key], [value]), (ms) => run(redis, 'extend', SCRIPTS.extend, [key], [value, ms])), { resource, token, fence, holder });
  }

  /**
   * One attempt is one round trip. Resolves `null` if the lock is still held when `waitMs` runs out;
   * rejects with `signal.reason` if aborted (a lock won by the in-flight attempt is released first)
   * and with a LockError `unavailable` if Redis cannot be reached.
   */
  async function acquire(resource: string, options: AcquireOptions = {}): Promise<Lock | null> {
    const { leaseMs, waitMs, retry, signal, fenceFloor: floor } = opts(options);
    const key = keys.slotted('lock', resource);
    const fenceKey = keys.slotted('lock', resource, 'fence');
    const token = newToken();
    const holder = sha1Hex(token);
    return poll(async () => {
      const sent = Date.now();
      const [ok, n] = await run<[number, number]>(redis, 'acquire', SCRIPTS.acquire, [key, fenceKey], [token, leaseMs, floor]);
      return ok === 1 ? makeLock(resource, key, token, n, await holder, sent + leaseMs) : n;
    }, waitMs, retry, signal);
  }

  /**
   * Runs `fn` under the lock, extending the lease every `leaseMs / 3`. If an extension finds the lock
   * gone or fails, `fn`'s signal aborts with a LockError `lost`; `fn` decides how to stop (its result or
   * error is what `withLock` returns). The lock is always released; a failed release after `fn`
   * succeeded is not thrown, because the lease frees the lock anyway.
   * @throws LockError `busy` if not acquired within `waitMs`; `unavailable` if Redis is down.
   */
  async function withLock<T>(resource: string, fn: (signal: AbortSignal, lock: Lock) => Promise<T>, options: AcquireOptions = {}): Promise<T> {
    const { leaseMs } = opts(options);
    const lock = await acquire(resource, options);
    if (!lock) throw new LockError('busy', 'withLock', resource);
    const ctrl = new AbortController();
    const forward = () => ctrl.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', forward, { once: true });
    const every = Math.max(1, Math.floor(leaseMs / 3));
    let stopped = false;
    const tick = async () => {
      const ok = await lock.extend(leaseMs).catch((cause: unknown) => new LockError('lost', 'withLock', resource, { cause }));
      if (stopped) return;
      if (ok === true) timer = setTimeout(tick, every);
      else ctrl.abort(ok === false ? new LockError('lost', 'withLock', resource) : ok);
    };
    let timer = setTimeout(tick, every);
    try {
      return await fn(ctrl.signal, lock);
    } finally {
      stopped = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', forward);
      await lock.release().catch(() => false);
    }
  }

  /**
   * A counting semaphore: at most `limit` permits live at once, each with its own lease.
   * @example
   * const permit = await locks.semaphore('pdf-render', { limit: 4 }).acquire({ waitMs: 1_000 });
   */
  function semaphore(name: string, { limit, leaseMs = 10_000 }: { limit: number; /** @default 10_000 */ leaseMs?: number }) {
    wholeNumber('semaphore: limit', limit);
    wholeNumber('semaphore: leaseMs', leaseMs);
    const key = keys.slotted('sem', name);
    return {
      /** One round trip per attempt; `null` if no permit freed up within `waitMs` (default 0). */
      async acquire(options: Omit<AcquireOptions, 'leaseMs' | 'fenceFloor'> = {}): Promise<Permit | null> {
        const { waitMs, retry, signal } = opts(options);
        const token = newToken();
        return poll(async () => {
          const sent = Date.now();
          const [ok, n] = await run<[number, number]>(redis, 'acquire', SCRIPTS.semAcquire, [key], [limit, leaseMs, token]);
          if (ok !== 1) return n;
          return Object.assign(handle(sent + leaseMs, () => run(redis, 'release', SCRIPTS.semUpdate, [key], [token, 0]), (ms) => run(redis, 'extend', SCRIPTS.semUpdate, [key], [token, ms])), { token });
        }, waitMs, retry, signal);
      },
    };
  }

  /** Who holds `resource`, with which fence, for how much longer. One round trip, read only. */
  async function inspect(resource: string): Promise<LockInfo> {
    const [held, fence, holder, pttl] = await run<[number, number?, string?, number?]>(redis, 'inspect', SCRIPTS.inspect, [keys.slotted('lock', resource)], []);
    const info: LockInfo = { held: held === 1 };
    if (fence !== undefined) info.fence = fence;
    if (holder !== undefined) info.holder = holder;
    if (pttl !== undefined && pttl >= 0) info.expiresInMs = pttl;
    return info;
  }

  return { acquire, withLock, semaphore, inspect };
}

export type Locks = ReturnType<typeof createLocks>;
