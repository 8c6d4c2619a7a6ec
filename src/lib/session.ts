/**
 * Sessions in Redis for Hono on Workers, counted in round trips.
 *
 * - The id is 256 random bits (base64url) and lives only in the cookie; Redis holds the session under
 *   SHA-256(id), so a dump or a `SCAN` leaks no usable id. That hash doubles as the non-secret handle
 *   for listing and revoking.
 * - One Redis HASH per session, written field by field (HSET/HDEL of what changed, values JSON), so two
 *   concurrent requests of one session keep each other's updates. Meta fields start with `_`, which is
 *   why user keys may not.
 * - Lazy: nothing touches Redis until the handler reads, and nothing is written (no Set-Cookie either)
 *   until something is stored, so bots and anonymous visitors cost nothing.
 * - Load = 1 read-only script (HGETALL + PTTL + TIME). Save = 1 script, only when something changed or
 *   a touch is due, awaited after the handler: the next request (a redirect after login) must see it.
 * - Expiry: rolling idle timeout capped by an absolute lifetime, computed in the script from Redis
 *   time; every write sends the cookie again with Max-Age = the TTL just set, so they never drift.
 * - A cookie that is malformed, unknown or expired means a fresh anonymous session, never an error. It
 *   is not cleared on its own: clearing it could race a concurrent login's new cookie; the next stored
 *   value replaces it.
 * - Redis down fails closed: 503 problem+json through `AppError('unavailable')` and `app.onError`.
 */
import type { Redis } from '@upstash/redis/cloudflare';
import type { Context, MiddlewareHandler } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import { AppError } from './errors.ts';
import type { KeySchema } from './keys.ts';
import { runScript, type LuaScript } from './script.ts';

/** The commands sessions use; a `Redis` from `@upstash/redis/cloudflare` satisfies it. */
export type SessionRedis = Pick<Redis, 'evalsha' | 'eval' | 'evalshaRo' | 'evalRo' | 'del' | 'zadd' | 'zrem' | 'zrange' | 'zremrangebyscore' | 'pexpire'>;

/** Lua run by sessions, each with its SHA1 (pinned in the tests). */
export const SCRIPTS = {
  /** `HGETALL` + `PTTL` + Redis time in one read-only call; cjson keeps the values away from the client's JSON guessing. */
  load: {
    src: `local t = redis.call('TIME')
return cjson.encode({redis.call('PTTL', KEYS[1]), t[1] * 1000 + math.floor(t[2] / 1000), redis.call('HGETALL', KEYS[1])})`,
    sha: '80883fbe53a9759e687ad0396a4578796fbc3475',
    ro: true,
  },
  /**
   * ARGV: mode ('c' create: must not exist; 'u' update: must exist, so a revoked session is never
   * resurrected), idleMs, absoluteMs, n, n field/value pairs to set, then fields to delete.
   * Returns {ttl, now}, or 0 when the session is gone or past its absolute lifetime.
   */
  save: {
    src: `local k = KEYS[1]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('EXISTS', k) == 1 then
  if ARGV[1] == 'c' then return 0 end
elseif ARGV[1] == 'u' then return 0
else redis.call('HSET', k, '_created', now) end
local created = tonumber(redis.call('HGET', k, '_created')) or now
local ttl = math.min(tonumber(ARGV[2]), created + tonumber(ARGV[3]) - now)
if ttl <= 0 then redis.call('DEL', k) return 0 end
local n = 4 + 2 * tonumber(ARGV[4])
for i = 5, n, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
for i = n + 1, #ARGV do redis.call('HDEL', k, ARGV[i]) end
redis.call('HSET', k, '_seen', now)
redis.call('PEXPIRE', k, ttl)
return {ttl, now}`,
    sha: 'f23f3de6ee1a49fbd240b074d3754c53a461e390',
  },
  /** Deletes a session only if it belongs to ARGV[1]: a handle from one user's list cannot end another's session. */
  revoke: {
    src: `if redis.call('HGET', KEYS[1], '_uid') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`,
    sha: '409b7d3fbcdaf9edaea59429826af9a4615a5130',
  },
} as const satisfies Record<string, LuaScript>;

const enc = new TextEncoder();
const b64url = (b: Uint8Array) => btoa(String.fromCharCode(...b)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
/** The storage key and the public handle of an id: SHA-256, so neither reveals the id. */
const hashId = async (id: string) => b64url(new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(id))));

const unavailable = (cause: unknown) =>
  new AppError('unavailable', { detail: 'Sessions are unavailable right now; try again shortly.', headers: { 'Retry-After': '5' }, cause });
/** Infrastructure failures become 503; a caller's mistake (TypeError) stays what it is. */
const guard = <T>(p: Promise<T>) => p.catch((e: unknown) => { throw e instanceof TypeError ? e : unavailable(e); });

const ID = /^[A-Za-z0-9_-]{43}$/;
/**
 * Index scores are a session's absolute deadline plus this, and entries are pruned only this long
 * after their score, so a skewed isolate clock never drops a live session from the index that
 * `revokeAll` relies on. Dead entries are also dropped whenever a list or revoke-all meets them.
 */
const INDEX_SLACK_MS = 60_000;

interface Loaded { pttl: number; now: number; fields: Map<string, string> }

function parseLoad(reply: unknown): Loaded | null {
  // The client JSON-parses the reply unless automaticDeserialization is off; accept both.
  const doc: unknown = typeof reply === 'string' ? JSON.parse(reply) : reply;
  if (!Array.isArray(doc)) return null;
  const [pttl, now, flat]: unknown[] = doc;
  // An empty HGETALL arrives as `{}`: cjson cannot tell an empty array from an empty object.
  if (typeof pttl !== 'number' || typeof now !== 'number' || pttl === -2 || !Array.isArray(flat) || !flat.length) return null;
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(String(flat[i]), String(flat[i + 1]));
  return { pttl, now, fields };
}

export interface SessionStoreOptions {
  /** The app's key schema: sessions at `key('sess', <hash>)`, each user's index at `key('user-sess', <userId>)`. */
  keys: KeySchema;
  /** Idle timeout (rolling): a session unused this long expires. @default 1_800_000 (30 min) */
  idleMs?: number;
  /** Absolute lifetime from creation (or the last `regenerate`), however active. @default 604_800_000 (7 days) */
  absoluteMs?: number;
}

/** One entry of `listSessions`. Times are epoch ms from Redis' clock. */
export interface SessionInfo {
  /** The non-secret handle (the hash of the id) to pass to `revokeSession`. */
  handle: string;
  createdAt: number;
  /** The last write or touch, so accurate to the touch interval. */
  lastSeenAt: number;
  expiresAt: number;
  userAgent: string | undefined;
}

export interface SessionStore {
  /** The user's live sessions, most recently seen first. 2 round trips (+1 write when it prunes dead entries). */
  listSessions(userId: string): Promise<SessionInfo[]>;
  /** Ends one of the user's sessions; false when the handle is unknown or not theirs. 1 round trip. */
  revokeSession(userId: string, handle: string): Promise<boolean>;
  /** "Log out everywhere", optionally sparing one handle (the current session's). Returns how many ended. 2 round trips. */
  revokeAll(userId: string, options?: { except?: string | undefined }): Promise<number>;
}

interface Config { keys: KeySchema; idleMs: number; absoluteMs: number }

function config({ keys, idleMs = 1_800_000, absoluteMs = 604_800_000 }: SessionStoreOptions): Config {
  for (const [name, v] of [['idleMs', idleMs], ['absoluteMs', absoluteMs]] as const) {
    // Browsers cap cookies at 400 days (RFC 6265bis) and hono refuses a longer Max-Age.
    if (!Number.isInteger(v) || v < 1000 || v > 400 * 86_400_000) throw new TypeError(`session: ${name} must be whole ms between 1 s and 400 days`);
  }
  return { keys, idleMs, absoluteMs };
}

function checkUser(userId: string): string {
  if (typeof userId !== 'string' || !userId || userId.length > 256) throw new TypeError('session: userId must be a non-empty string of at most 256 characters');
  return userId;
}

/**
 * The per-user side: list a user's sessions, revoke one, revoke all. No I/O until called.
 *
 * @example
 * const store = sessionStore(createRedis(c.env), { keys });
 * const ended = await store.revokeAll(userId, { except: await c.get('session').handle() });
 */
export function sessionStore(redis: SessionRedis, options: SessionStoreOptions): SessionStore {
  const { keys } = config(options);
  const sess = (handle: string) => keys.key('sess', handle);
  const index = (userId: string) => keys.key('user-sess', checkUser(userId));
  const handles = async (userId: string) => (await redis.zrange<unknown[]>(index(userId), 0, -1)).map(String);
  const revoke = (userId: string, hs: string[]) =>
    // Session keys live in other slots than the index, so this is one pipeline rather than one script.
    Promise.all([...hs.map((h) => runScript(redis, SCRIPTS.revoke, [sess(h)], [userId])), redis.zrem(index(userId), ...hs)]).then((r) => r.slice(0, -1).filter((n) => n === 1).length);
  return {
    listSessions: (userId) =>
      guard((async () => {
        const all = await handles(userId);
        const loaded = (await Promise.all(all.map((h) => runScript(redis, SCRIPTS.load, [sess(h)], [])))).map(parseLoad);
        const live: SessionInfo[] = [];
        const dead = all.filter((handle, i) => {
          const s = loaded[i];
          if (!s || s.fields.get('_uid') !== userId) return true;
          const num = (f: string) => Number(s.fields.get(f) ?? 0);
          live.push({ handle, createdAt: num('_created'), lastSeenAt: num('_seen'), expiresAt: s.now + s.pttl, userAgent: s.fields.get('_ua') });
          return false;
        });
        if (dead.length) await redis.zrem(index(userId), ...dead);
        return live.sort((a, b) => b.lastSeenAt - a.lastSeenAt);
      })()),
    revokeSession: (userId, handle) => (ID.test(handle) ? guard(revoke(userId, [handle]).then((n) => n === 1)) : Promise.resolve(false)),
    revokeAll: (userId, { except } = {}) =>
      guard(handles(userId).then((all) => {
        const targets = all.filter((h) => h !== except);
        return targets.length ? revoke(userId, targets) : 0;
      })),
  };
}

/** Cookie attributes. A `__Host-` name needs `secure`, path `/` and no `domain` (checked at setup). */
export interface SessionCookieOptions {
  /** Over plain http (other than localhost, which browsers treat as secure) use e.g. `name: 'sid', secure: false`. @default "__Host-sid" */
  name?: string;
  /** @default true */
  secure?: boolean;
  /** @default true */
  httpOnly?: boolean;
  /** @default "Lax" */
  sameSite?: 'Strict' | 'Lax' | 'None';
  /** @default "/" */
  path?: string;
  /** @default undefined (host-only) */
  domain?: string;
}

export interface SessionOptions extends SessionStoreOptions {
  /** The client, or a function of the context building it; called only once Redis is needed. */
  redis: SessionRedis | ((c: Context) => SessionRedis);
  /** An unchanged session is touched (expiry extended, cookie re-sent) only when that gains at least this much. @default idleMs / 10 */
  touchIntervalMs?: number;
  cookie?: SessionCookieOptions;
}

export type SessionData = Record<string, unknown>;

/** The request's session, `c.get('session')`. Reads load it once (1 round trip); writes are collected and saved after the handler. */
export interface Session<T extends SessionData = SessionData> {
  get<K extends keyof T & string>(key: K): Promise<T[K] | undefined>;
  /** All user data. */
  all(): Promise<Partial<T>>;
  /** `undefined` deletes. The value must survive JSON; keys may not start with `_` (meta fields). */
  set<K extends keyof T & string>(key: K, value: T[K] | undefined): void;
  delete(key: keyof T & string): void;
  getUser(): Promise<string | undefined>;
  /** Binds the session to a user and adds it to the user's index. At login prefer `login()`. */
  setUser(userId: string): void;
  /** `regenerate()` then `setUser()`: the fixation defence, keeping what the visitor had (a cart). */
  login(userId: string): Promise<void>;
  /** New id, same data (including values set earlier in this request); the old id stops working. */
  regenerate(): Promise<void>;
  /** Deletes the session and clears the cookie; values set afterwards start a new session. */
  destroy(): void;
  /** Extends the expiry and re-sends the cookie in this response, whatever the touch interval says. */
  touch(): void;
  /** The stored session's non-secret handle (for `revokeAll`'s `except`), else undefined. */
  handle(): Promise<string | undefined>;
  /** Saves now, in this round trip, what the middleware would save after the handler (which then has nothing left to write, or skips it after this rejected: a 503 AppError). */
  save(): Promise<void>;
}

/** The context variables the middleware sets; merge into your `AppEnv['Variables']`. */
export type SessionVariables<T extends SessionData = SessionData> = { session: Session<T> };

type Entry = { json: string; value: unknown } | null;
interface Resolved extends Config {
  redis: SessionOptions['redis'];
  touchIntervalMs: number;
  cookie: { name: string; secure: boolean; httpOnly: boolean; sameSite: 'Strict' | 'Lax' | 'None'; path: string; domain?: string };
}

class RequestSession implements Session {
  private readonly c: Context;
  private readonly o: Resolved;
  private readonly hadCookie: boolean;
  private id: string | undefined;
  private hash: string | undefined;
  /** none: nothing stored (yet); unknown: a well-formed cookie, not loaded; live: loaded and present. */
  private state: 'none' | 'unknown' | 'live';
  private loading: Promise<void> | undefined;
  private data = new Map<string, unknown>();
  private dirty = new Map<string, Entry>();
  private created: number | undefined;
  private uid: string | undefined;
  private newUid: string | undefined;
  private drop: { id: string; uid: string | undefined } | undefined;
  private clear = false;
  private touchDue = false;
  private failed = false;
  private client: SessionRedis | undefined;

  constructor(c: Context, o: Resolved) {
    this.c = c;
    this.o = o;
    const raw = getCookie(c, o.cookie.name);
    this.hadCookie = raw !== undefined;
    this.id = raw !== undefined && ID.test(raw) ? raw : undefined;
    this.state = this.id ? 'unknown' : 'none';
  }

  private get redis() {
    return (this.client ??= typeof this.o.redis === 'function' ? this.o.redis(this.c) : this.o.redis);
  }
  private key(hash: string) { return this.o.keys.key('sess', hash); }
  private index(userId: string) { return this.o.keys.key('user-sess', userId); }

  private load(): Promise<void> {
    if (this.state !== 'unknown') return this.loading ?? Promise.resolve();
    return (this.loading ??= (async () => {
      let s: Loaded | null;
      try {
        this.hash = await hashId(this.id!);
        s = parseLoad(await runScript(this.redis, SCRIPTS.load, [this.key(this.hash)], []));
      } catch (e) {
        this.failed = true;
        throw unavailable(e);
      }
      if (this.state !== 'unknown') return; // destroy() ran meanwhile
      if (!s) return this.forget(); // unknown or expired: a fresh anonymous session
      this.state = 'live';
      for (const [f, v] of s.fields) {
        if (f.startsWith('_')) continue;
        try { this.data.set(f, JSON.parse(v)); } catch { this.data.set(f, v); }
      }
      this.created = Number(s.fields.get('_created') ?? s.now);
      this.uid = s.fields.get('_uid');
      // Touch only when that buys at least the interval: slides the idle timeout, and stops near the absolute cap.
      this.touchDue ||= Math.min(this.o.idleMs, this.created + this.o.absoluteMs - s.now) - s.pttl >= this.o.touchIntervalMs;
    })());
  }

  /** Back to "no session". The dirty changes stay: they are this request's intent. */
  private forget() {
    this.state = 'none';
    this.id = this.hash = this.created = this.uid = undefined;
    this.data = new Map();
    this.touchDue = false;
  }

  async get(key: string) {
    await this.load();
    const d = this.dirty.get(key);
    return d !== undefined ? d?.value : this.data.get(key);
  }
  async all() {
    await this.load();
    const out: SessionData = Object.fromEntries(this.data);
    for (const [k, d] of this.dirty) d ? (out[k] = d.value) : delete out[k];
    return out;
  }
  set(key: string, value: unknown) {
    if (typeof key !== 'string' || !key || key.startsWith('_')) throw new TypeError(`session: key "${key}" is empty or reserved`);
    if (value === undefined) return void this.dirty.set(key, null);
    const json = JSON.stringify(value); // throws on cycles and BigInt, in the handler where the bug is
    if (json === undefined) throw new TypeError(`session: the value of "${key}" is not JSON`);
    this.dirty.set(key, { json, value });
  }
  delete(key: string) { this.set(key, undefined); }
  async getUser() {
    await this.load();
    return this.newUid ?? this.uid;
  }
  setUser(userId: string) { this.newUid = checkUser(userId); }
  async login(userId: string) {
    checkUser(userId);
    await this.regenerate();
    this.setUser(userId);
  }
  async regenerate() {
    await this.load();
    const { data, dirty } = this;
    const uid = this.newUid ?? this.uid;
    this.destroy();
    Object.assign(this, { data, dirty, newUid: uid });
  }
  destroy() {
    if (this.id && this.state !== 'none') this.drop = { id: this.id, uid: this.uid };
    this.clear = this.hadCookie;
    this.forget();
    this.dirty = new Map();
    this.newUid = undefined;
  }
  touch() { this.touchDue = this.state !== 'none'; }
  async handle() {
    await this.load();
    return this.state === 'none' ? undefined : this.hash;
  }

  /** After the handler: one write round trip, or none when nothing changed and no touch is due. */
  async save(): Promise<void> {
    if (this.failed) return;
    try {
      if (await this.write()) {
        // Gone between load and save (revoked, expired, destroyed elsewhere): what this request set
        // starts a fresh session; what it had read from the dead one is not carried over.
        this.forget();
        if (await this.write()) throw new Error('session: a fresh session was refused');
      }
    } catch (e) {
      this.failed = true;
      throw unavailable(e);
    }
  }

  /** One pipelined round trip; true when the session to update no longer exists. */
  private async write(): Promise<boolean> {
    const { idleMs, absoluteMs } = this.o;
    const uidChange = this.newUid !== undefined && this.newUid !== this.uid;
    const sets = [...this.dirty].filter((e): e is [string, NonNullable<Entry>] => e[1] !== null);
    const creating = this.state === 'none' && (this.data.size > 0 || sets.length > 0 || uidChange);
    const updating = this.state !== 'none' && (this.dirty.size > 0 || uidChange || this.touchDue);
    if (!creating && !updating && !this.drop) {
      if (this.clear) this.cookie('', 0);
      return false;
    }
    if (creating) this.id = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const [hash, dropHash] = await Promise.all([creating || updating ? (this.hash ?? hashId(this.id!)) : undefined, this.drop && hashId(this.drop.id)]);
    // From here on every command is issued in one tick, so auto-pipelining sends one request.
    const writes: Promise<unknown>[] = [];
    if (this.drop && dropHash) {
      writes.push(this.redis.del(this.key(dropHash)));
      if (this.drop.uid) writes.push(this.redis.zrem(this.index(this.drop.uid), dropHash));
    }
    this.drop = undefined;
    if (!hash) {
      await Promise.all(writes);
      this.cookie('', 0);
      return false;
    }
    this.hash = hash;
    const pairs: string[] = [];
    if (creating) {
      for (const [k, v] of this.data) if (!this.dirty.has(k)) pairs.push(k, JSON.stringify(v));
      const ua = this.c.req.header('user-agent');
      if (ua) pairs.push('_ua', ua.slice(0, 256));
    }
    for (const [k, d] of sets) pairs.push(k, d.json);
    if (uidChange) pairs.push('_uid', this.newUid!);
    const deletes = creating ? [] : [...this.dirty].flatMap(([k, d]) => (d ? [] : [k]));
    const saved = runScript(this.redis, SCRIPTS.save, [this.key(hash)], [creating ? 'c' : 'u', idleMs, absoluteMs, pairs.length / 2, ...pairs, ...deletes]);
    if (uidChange) {
      const idx = this.index(this.newUid!);
      const now = Date.now();
      writes.push(
        this.redis.zadd(idx, { score: (this.created ?? now) + absoluteMs + INDEX_SLACK_MS, member: hash }),
        this.redis.zremrangebyscore(idx, '-inf', now - INDEX_SLACK_MS),
        this.redis.pexpire(idx, absoluteMs + 2 * INDEX_SLACK_MS),
      );
      if (this.uid) writes.push(this.redis.zrem(this.index(this.uid), hash));
    }
    const [reply] = await Promise.all([saved, ...writes]);
    if (!Array.isArray(reply) || typeof reply[0] !== 'number') return true;
    this.state = 'live';
    this.uid = this.newUid ?? this.uid;
    [this.dirty, this.touchDue] = [new Map(), false];
    this.cookie(this.id!, Math.floor(reply[0] / 1000));
    return false;
  }

  private cookie(value: string, maxAge: number) {
    const { name, ...attrs } = this.o.cookie;
    setCookie(this.c, name, value, { ...attrs, maxAge });
    this.clear = false;
  }
}

/**
 * Hono middleware: a lazy `Session` on `c.get('session')`, saved (awaited) after the handler. Use it
 * with `app.onError(onError)` so that Redis being down answers 503 problem+json.
 *
 * @example
 * type AppEnv = { Bindings: Env; Variables: SessionVariables<{ cart: string[] }> };
 * const app = new Hono<AppEnv>();
 * app.onError(onError);
 * app.use(session({ redis: (c) => createRedis(c.env), keys: keySchema({ app: 'shop', env: 'prod' }) }));
 * app.post('/login', async (c) => {
 *   await c.get('session').login(await verifyPassword(c)); // new id, cart kept
 *   return c.redirect('/');
 * });
 */
export function session<T extends SessionData = SessionData>(options: SessionOptions): MiddlewareHandler<{ Variables: SessionVariables<T> }> {
  const cfg = config(options);
  const { name = '__Host-sid', secure = true, httpOnly = true, sameSite = 'Lax', path = '/', domain } = options.cookie ?? {};
  if (!/^[\w!#$%&'*+\-.^`|~]+$/.test(name)) throw new TypeError(`session: invalid cookie name "${name}"`);
  if (/^__host-/i.test(name) && (!secure || path !== '/' || domain !== undefined)) throw new TypeError('session: a __Host- cookie needs secure: true, path "/" and no domain');
  if ((/^__secure-/i.test(name) || sameSite === 'None') && !secure) throw new TypeError('session: __Secure- cookies and SameSite=None need secure: true');
  const touchIntervalMs = options.touchIntervalMs ?? Math.floor(cfg.idleMs / 10);
  if (!Number.isInteger(touchIntervalMs) || touchIntervalMs < 0) throw new TypeError('session: touchIntervalMs must be whole ms ≥ 0');
  const o: Resolved = { ...cfg, redis: options.redis, touchIntervalMs, cookie: { name, secure, httpOnly, sameSite, path, ...(domain !== undefined ? { domain } : {}) } };
  return async function sessionMiddleware(c, next) {
    const s = new RequestSession(c, o);
    c.set('session', s as Session as Session<T>);
    await next();
    // A crash (5xx) may have left half its changes: keep the stored state. A deliberate 4xx (a
    // failed login counting attempts) still saves.
    if (c.error && c.res.status >= 500) return;
    await s.save();
  };
}
