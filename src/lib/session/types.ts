/** The public types of sessions (./index.ts builds the store; `edge-redis/hono` the middleware). */
import type { KeySchema } from '../keys.ts';
import type { RedisCommands } from '../redis.ts';

/** The commands sessions use; a `Redis` from `@upstash/redis/cloudflare` satisfies it. */
export type SessionRedis = RedisCommands<'evalsha' | 'eval' | 'evalshaRo' | 'evalRo' | 'del' | 'zadd' | 'zrem' | 'zrange' | 'zremrangebyscore' | 'pexpire'>;

export interface SessionStoreOptions {
  redis: SessionRedis;
  /** The app's key schema: sessions at `key('sess', <hash>)`, each user's index at `key('user-sess', <userId>)`. */
  keys: KeySchema;
  /** Idle timeout (rolling): a session unused this long expires. @default 1_800_000 (30 min) */
  idleMs?: number;
  /** Absolute lifetime from creation (or the last `regenerate`), however active. @default 604_800_000 (7 days) */
  absoluteMs?: number;
  /** An unchanged session is touched (expiry extended, cookie re-sent) only when that gains at least this much. @default idleMs / 10 */
  touchIntervalMs?: number;
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

/** Where a request's session sends its cookie: the id and its Max-Age in seconds, or `''` and 0 to clear it. */
export type CookieSink = (value: string, maxAgeS: number) => void;

/** What a request brings: the cookie's value (if any) and the user agent (listed in `listSessions`). */
export interface SessionRequest {
  cookie: string | undefined;
  userAgent?: string | undefined;
  /** Receives every cookie the session sets or clears. */
  setCookie: CookieSink;
}

export interface SessionStore {
  /** The session of one request: lazy, no I/O until read or saved. */
  open<T extends SessionData = SessionData>(request: SessionRequest): Session<T>;
  /** The user's live sessions, most recently seen first. 2 round trips (+1 write when it prunes dead entries). */
  listSessions(userId: string): Promise<SessionInfo[]>;
  /** Ends one of the user's sessions; false when the handle is unknown or not theirs. 1 round trip. */
  revokeSession(userId: string, handle: string): Promise<boolean>;
  /** "Log out everywhere", optionally sparing one handle (the current session's). Returns how many ended. 2 round trips. */
  revokeAll(userId: string, options?: { except?: string | undefined }): Promise<number>;
}

export type SessionData = Record<string, unknown>;

/** The request's session (`c.var.session` with the middleware). Reads load it once (1 round trip); writes are collected and saved after the handler. */
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
  /**
   * Saves now, in this round trip, what would be saved after the handler (which then has nothing
   * left to write, or skips it after this rejected with a `SessionError`). One write round trip,
   * or none when nothing changed and no touch is due.
   */
  save(): Promise<void>;
}
