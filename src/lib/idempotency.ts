/**
 * Idempotency keys over HTTP Redis: the first request with a key claims it, a duplicate that arrives
 * while it runs is told so, and a duplicate that arrives after it finished gets the same response.
 *
 * - Claim = ONE command, `SET <record> <pending> NX GET PX <pendingMs>` (Redis ≥ 7.0): it either
 *   stores the in-progress marker (and answers nil) or leaves the key alone and answers what is there,
 *   a pending marker or a completed response. No script, so no NOSCRIPT fallback on a cold Redis.
 * - Every record carries the request's fingerprint (see {@link fingerprint}); a key reused for a
 *   different request is reported as such (`sameRequest: false`), never replayed.
 * - `complete` stores the response with a long TTL (default 24 h) by a plain SET: the record describes
 *   work that is done (an order in the database), so it may replace whatever marker is there.
 * - `release` drops our own pending marker (compare-and-delete in one script) when the work did not
 *   happen, so the key can be used again at once.
 * - A marker whose holder died expires after `pendingMs`; the caller's durable store must then be the
 *   backstop (a UNIQUE key column), since Redis may also simply lose a record.
 *
 * Failure policy: fail closed. A Redis failure rejects with an `IdempotencyError` (`unavailable`,
 * 503 through `edge-redis/hono`): without a claim the caller cannot know whether the work runs twice.
 *
 * @example
 * const idem = createIdempotency({ redis, keys, namespace: 'checkout' });
 * const id = await fingerprint(['checkout', userId, c.req.header('idempotency-key')]);
 * const claim = await idem.begin(id, await fingerprint(body));
 * if (claim.state === 'completed' && claim.sameRequest) return c.json(claim.response.body, claim.response.status);
 */
import { IdempotencyError } from './errors.ts';
import type { KeySchema } from './keys.ts';
import type { RedisCommands } from './redis.ts';
import { runScript, type LuaScript } from './script.ts';
import { digest, hex, randomBytes, storedObject, wholeNumber } from './util.ts';

export { IdempotencyError };

/** The commands this module sends. */
export type IdempotencyRedis = RedisCommands<'set' | 'get' | 'evalsha' | 'eval'>;

// Pinned and checked in the tests, like lock.ts: a warm release is one EVALSHA.
export const SCRIPTS = {
  // Deletes the record only while it is still our pending marker, which starts `{"s":"p","t":"<token>"`.
  release: {
    src: `local record, token = KEYS[1], ARGV[1]
local mine = '{"s":"p","t":"' .. token .. '"'
local v = redis.call('GET', record)
if v and string.sub(v, 1, #mine) == mine then return redis.call('DEL', record) end
return 0`,
    sha: 'eb1083d9bb21b329c6735fef37ceeb34fbc61b4e',
  },
} as const satisfies Record<string, LuaScript>;

/** What a completed request answered, as replayed. */
export interface StoredResponse {
  status: number;
  body: unknown;
}

/** The outcome of {@link Idempotency.begin}. */
export type Claim =
  /** Ours: do the work, then `complete` (or `release` if nothing happened). */
  | { state: 'claimed'; token: string }
  /** Another request holds the key right now. */
  | { state: 'in_progress'; sameRequest: boolean }
  /** The key's request finished; `response` is what it answered. */
  | { state: 'completed'; sameRequest: boolean; fingerprint: string; response: StoredResponse };

/** A stored record as {@link Idempotency.peek} reports it. */
export type IdempotencyRecord =
  | { state: 'in_progress'; fingerprint: string }
  | { state: 'completed'; fingerprint: string; response: StoredResponse };

export interface IdempotencyOptions {
  redis: IdempotencyRedis;
  keys: KeySchema;
  /** Kind of work, a key segment: keys of different namespaces never meet. @default "default" */
  namespace?: string;
  /** How long an unfinished claim blocks duplicates; longer than the work can take. @default 30_000 */
  pendingMs?: number;
  /** How long a completed response is replayed. @default 86_400_000 (24 h) */
  ttlMs?: number;
}

export interface Idempotency {
  /** Claims `key` for the request with `fingerprint`, or reports who has it. One round trip. */
  begin(key: string, fingerprint: string): Promise<Claim>;
  /** The record of `key`, without claiming it. One round trip (GET). */
  peek(key: string): Promise<IdempotencyRecord | null>;
  /** Stores the response to replay for `ttlMs`. One round trip (SET PX). */
  complete(key: string, fingerprint: string, response: StoredResponse): Promise<void>;
  /** Drops our claim if it is still ours (`true`), so the key may be retried now. One round trip. */
  release(key: string, token: string): Promise<boolean>;
}

/** JSON with object keys sorted at every depth, so equal values always print the same. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * SHA-256 (hex) of the canonical JSON of `value`: a request's fingerprint, or a key id that is safe
 * in a Redis key and a database column whatever characters the client's key holds.
 *
 * @example
 * await fingerprint([['7', 2], ['12', 1]]); // "5c0b…" (64 hex digits)
 */
export async function fingerprint(value: unknown): Promise<string> {
  return hex(await digest('SHA-256', canonicalJson(value)));
}

const KEY = /^[\w.\-]{1,128}$/;

interface Stored { s: 'p' | 'd'; f: string; t?: string; r?: StoredResponse }

/** The client hands back a JSON string already parsed; accept either form, reject anything else. */
function parse(raw: unknown): Stored | null {
  const doc = storedObject(raw);
  if (!doc) return null;
  const { s, f, t, r } = doc;
  if ((s !== 'p' && s !== 'd') || typeof f !== 'string') return null;
  if (s === 'd') {
    if (typeof r !== 'object' || r === null || typeof (r as StoredResponse).status !== 'number') return null;
    return { s, f, r: r as StoredResponse };
  }
  return { s, f, ...(typeof t === 'string' ? { t } : {}) };
}

/**
 * Builds the idempotency store. Does no I/O.
 *
 * @example
 * const idem = createIdempotency({ redis, keys, namespace: 'checkout', ttlMs: 86_400_000 });
 */
export function createIdempotency({ redis, keys, namespace = 'default', pendingMs = 30_000, ttlMs = 86_400_000 }: IdempotencyOptions): Idempotency {
  wholeNumber('idempotency: pendingMs', pendingMs);
  wholeNumber('idempotency: ttlMs', ttlMs);
  const recordKey = (key: string) => {
    if (!KEY.test(key)) throw new TypeError('idempotency: a key id must be 1..128 of [A-Za-z0-9_.-] (pass it through fingerprint())');
    return keys.key('idem', namespace, key);
  };
  // Field order matters: the release script recognises our marker by its `{"s":"p","t":"<token>"` prefix.
  const pending = (fp: string, token: string) => JSON.stringify({ s: 'p', t: token, f: fp } satisfies Stored);

  return {
    async begin(key, fp) {
      const k = recordKey(key);
      const token = hex(randomBytes(16));
      let previous: unknown;
      try {
        previous = await redis.set(k, pending(fp, token), { nx: true, get: true, px: pendingMs });
      } catch (cause) {
        throw new IdempotencyError('begin', { cause });
      }
      if (previous === null || previous === undefined) return { state: 'claimed', token };
      const rec = parse(previous);
      // Something unreadable under our key: treat it as taken by another request rather than overwrite it.
      if (!rec) return { state: 'in_progress', sameRequest: false };
      if (rec.s === 'p') return { state: 'in_progress', sameRequest: rec.f === fp };
      return { state: 'completed', sameRequest: rec.f === fp, fingerprint: rec.f, response: rec.r! };
    },

    async peek(key) {
      const k = recordKey(key);
      let raw: unknown;
      try {
        raw = await redis.get(k);
      } catch (cause) {
        throw new IdempotencyError('peek', { cause });
      }
      const rec = raw === null || raw === undefined ? null : parse(raw);
      if (!rec) return null;
      return rec.s === 'p' ? { state: 'in_progress', fingerprint: rec.f } : { state: 'completed', fingerprint: rec.f, response: rec.r! };
    },

    async complete(key, fp, response) {
      const k = recordKey(key);
      try {
        await redis.set(k, JSON.stringify({ s: 'd', f: fp, r: response } satisfies Stored), { px: ttlMs });
      } catch (cause) {
        throw new IdempotencyError('complete', { cause });
      }
    },

    async release(key, token) {
      const k = recordKey(key);
      if (!/^[0-9a-f]{32}$/.test(token)) throw new TypeError('idempotency: not a claim token');
      try {
        const n = await runScript<number>(redis, SCRIPTS.release, [k], [token]);
        return n === 1;
      } catch (cause) {
        throw new IdempotencyError('release', { cause });
      }
    },
  };
}
