/**
 * Login throttling the way OWASP describes it (Authentication Cheat Sheet; "Slow Down Online
 * Guessing Attacks with Device Cookies"): failed attempts count, successes do not, and what slows a
 * guesser down is a throttle, never a lock-out that anyone who knows a username can trigger.
 *
 * - Per source: at most `perSource.limit` FAILED attempts per `perSource.windowMs` for one
 *   (account, source) pair, the source being the client's address or, for a trusted device, the
 *   device. A success clears that pair's failures.
 * - Per account: at most `perAccount.limit` failed attempts per `perAccount.windowMs` for the account
 *   from all untrusted sources together, which is what stops distributed guessing (many addresses,
 *   few tries each). It is a throttle (a sliding log: room frees as failures age) and it does not
 *   apply to trusted devices: a device becomes trusted by a successful login to that account (its
 *   device token, kept by the caller in a cookie, is remembered for `trustMs`). So an attacker who
 *   fills the account's log slows only other untrusted sources, never the owner's known devices.
 * - Concurrency: the check RESERVES one attempt in the same script (all or nothing), so N parallel
 *   guesses cannot all pass a count of 0; a success gives the reservation back, a failure keeps it.
 *
 * Keys share the account's hash tag (one Cluster slot per account). Redis forgetting them resets the
 * counts (an attacker gets a fresh budget) and the device trust (a known device is untrusted until
 * its next success): what may be lost, never a lock-out. Failure policy: fail CLOSED; a Redis
 * failure rejects with a `LoginThrottleError` (`unavailable`, 503 through `edge-redis/hono`): an
 * outage must not open the door.
 *
 * Round trips: `check` 1 (with a batching client, alongside the session load); `succeeded` 1
 * (alongside the session save); a failed attempt 0 (its reservation simply stays).
 *
 * Hand-written on purpose: `@upstash/ratelimit` (and ./ratelimit.ts) count every call, and can neither
 * give a success back nor choose the counter by device trust in the same atomic step.
 *
 * @example
 * const throttle = createLoginThrottle({ redis, keys, perSource: { limit: 5, windowMs: 900_000 }, perAccount: { limit: 20, windowMs: 3_600_000 } });
 * const gate = await throttle.check({ account: username.toLowerCase(), source: ip, device: getCookie(c, 'did') });
 * if (!gate.allowed) return tooMany(gate.retryAfterMs);
 * if (await passwordOk()) setCookie(c, 'did', await gate.attempt.succeeded(), { httpOnly: true });
 */
import { LoginThrottleError } from './errors.ts';
import type { KeySchema } from './keys.ts';
import type { RedisCommands } from './redis.ts';
import { LUA_NOW_MS, runScript, type LuaScript } from './script.ts';
import { base64url, digest, randomBytes, wholeNumber } from './util.ts';

export { LoginThrottleError };

/** The commands this module sends (scripts only). */
export type LoginThrottleRedis = RedisCommands<'evalsha' | 'eval'>;

export const SCRIPTS = {
  // KEYS: address log, device log, account log, device trust. ARGV: nonce, source limit, source
  // window ms, account limit, account window ms, device presented (1|0). A trusted device counts on
  // its own log and not on the account's; anything else on the address's and the account's.
  // Returns {allowed, trusted, which refused ('' | 'source' | 'account'), retry ms, source left, account left (-1: not counted)}.
  check: {
    src: `local addressLog, deviceLog, accountLog, trust = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local nonce, sourceLimit, sourceWindow, accountLimit, accountWindow, presented = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
${LUA_NOW_MS}local trusted = presented and redis.call('EXISTS', trust) == 1
local src = trusted and deviceLog or addressLog
local function room(key, limit, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local n = redis.call('ZCARD', key)
  if n < limit then return limit - n, 0 end
  local first = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  return 0, tonumber(first[2]) + window - now
end
local sLeft, sRetry = room(src, sourceLimit, sourceWindow)
local aLeft, aRetry = 0, 0
if not trusted then aLeft, aRetry = room(accountLog, accountLimit, accountWindow) end
local tflag = trusted and 1 or 0
if sLeft == 0 then return {0, tflag, 'source', sRetry, 0, aLeft} end
if not trusted and aLeft == 0 then return {0, tflag, 'account', aRetry, sLeft, 0} end
redis.call('ZADD', src, now, nonce)
redis.call('PEXPIRE', src, sourceWindow)
if trusted then return {1, 1, '', 0, sLeft - 1, -1} end
redis.call('ZADD', accountLog, now, nonce)
redis.call('PEXPIRE', accountLog, accountWindow)
return {1, 0, '', 0, sLeft - 1, aLeft - 1}`,
    sha: '6363ed3ec870c43c94121db952018e8dd2f8db8e',
  },
  // KEYS: as check. ARGV: nonce, trust ms. Clears the failures of the address and of the device,
  // gives the account reservation back, and trusts the device.
  succeeded: {
    src: `local addressLog, deviceLog, accountLog, trust = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local nonce, trustMs = ARGV[1], ARGV[2]
redis.call('DEL', addressLog, deviceLog)
redis.call('ZREM', accountLog, nonce)
redis.call('SET', trust, '1', 'PX', trustMs)
return 1`,
    sha: '3372ac6e176766af6c97d15f5436155203bc576d',
  },
} as const satisfies Record<string, LuaScript>;

export interface ThrottleLimit {
  limit: number;
  windowMs: number;
}

export interface LoginThrottleOptions {
  redis: LoginThrottleRedis;
  keys: KeySchema;
  /** Failed attempts per (account, address) or (account, trusted device). */
  perSource: ThrottleLimit;
  /** Failed attempts per account from all untrusted sources. */
  perAccount: ThrottleLimit;
  /** How long a device stays trusted after a successful login. @default 2_592_000_000 (30 days) */
  trustMs?: number;
}

/** Who is trying: the account (e.g. the lower-cased username), the client address, the device token if any. */
export interface Attempter {
  account: string;
  source: string;
  /** The device token the client presented (the caller's cookie); anything else is ignored. */
  device?: string | undefined;
}

/** An attempt that may go on. Report its outcome: a success must be reported, a failure may be. */
export interface Attempt {
  /** Whether the device presented was trusted for this account (it then has its own count and no account limit). */
  readonly trusted: boolean;
  /** Remaining failed attempts for this source after this one, and for the account (-1: not counted, trusted). */
  readonly remaining: { source: number; account: number };
  /** Clears this source's failures, returns the account's reservation, trusts the device; answers the device token to keep (new or the one presented). One round trip. */
  succeeded(): Promise<string>;
}

export type Gate =
  | { allowed: true; attempt: Attempt }
  | { allowed: false; by: 'source' | 'account'; retryAfterMs: number; trusted: boolean };

const DEVICE = /^[A-Za-z0-9_-]{43}$/;
function checkLimit(name: string, l: ThrottleLimit): void {
  wholeNumber(`login throttle: ${name}.limit`, l.limit);
  wholeNumber(`login throttle: ${name}.windowMs`, l.windowMs);
}

/**
 * Builds the throttle. Does no I/O.
 *
 * @example
 * const throttle = createLoginThrottle({ redis, keys, perSource: { limit: 5, windowMs: 900_000 }, perAccount: { limit: 20, windowMs: 3_600_000 } });
 */
export function createLoginThrottle({ redis, keys, perSource, perAccount, trustMs = 2_592_000_000 }: LoginThrottleOptions) {
  checkLimit('perSource', perSource);
  checkLimit('perAccount', perAccount);
  wholeNumber('login throttle: trustMs', trustMs);

  const run = async <T>(op: string, script: (typeof SCRIPTS)[keyof typeof SCRIPTS], k: string[], args: (string | number)[]): Promise<T> => {
    try {
      return await runScript<T>(redis, script, k, args);
    } catch (cause) {
      throw new LoginThrottleError(op, { cause });
    }
  };

  return {
    /** Whether this attempt may go on; if so, it is counted as a failure until `succeeded()`. One round trip. */
    async check({ account, source, device }: Attempter): Promise<Gate> {
      if (!account || !source) throw new TypeError('login throttle: account and source are required');
      const presented = device !== undefined && DEVICE.test(device) ? device : undefined;
      const token = presented ?? base64url(randomBytes(32));
      const deviceId = base64url(await digest('SHA-256', token));
      const k = [keys.slotted('login', account, 'src', source), keys.slotted('login', account, 'dev', deviceId), keys.slotted('login', account), keys.slotted('login', account, 'trust', deviceId)];
      const nonce = base64url(randomBytes(12));
      const [ok, trustedFlag, by, retryMs, sourceLeft, accountLeft] = await run<[number, number, string, number, number, number]>(
        'check', SCRIPTS.check, k, [nonce, perSource.limit, perSource.windowMs, perAccount.limit, perAccount.windowMs, presented ? 1 : 0],
      );
      const trusted = trustedFlag === 1;
      if (ok !== 1) return { allowed: false, by: by === 'account' ? 'account' : 'source', retryAfterMs: Math.max(1, Number(retryMs)), trusted };
      return {
        allowed: true,
        attempt: {
          trusted,
          remaining: { source: Number(sourceLeft), account: Number(accountLeft) },
          async succeeded() {
            await run('succeeded', SCRIPTS.succeeded, k, [nonce, trustMs]);
            return token;
          },
        },
      };
    },
  };
}

export type LoginThrottle = ReturnType<typeof createLoginThrottle>;
