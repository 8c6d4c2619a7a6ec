/**
 * The store: opens each request's session (./request.ts) and serves the per-user side (list a
 * user's sessions, revoke one, revoke all). Fails closed: every Redis failure rejects with
 * `SessionError`; a caller's mistake (a bad user id) stays a TypeError.
 */
import { SessionError } from '../errors.ts';
import { runScript } from '../script.ts';
import { wholeNumber } from '../util.ts';
import { checkUser, parseLoad, RequestSession, SESSION_ID, type SessionConfig } from './request.ts';
import { SCRIPTS } from './scripts.ts';
import type { Session, SessionData, SessionInfo, SessionStore, SessionStoreOptions } from './types.ts';

// Browsers cap cookies at 400 days (RFC 6265bis) and a longer Max-Age is refused.
const MAX_LIFETIME_MS = 400 * 86_400_000;

/** The checked settings of a store. Throws RangeError on a bad lifetime. */
export function sessionConfig({ redis, keys, idleMs = 1_800_000, absoluteMs = 604_800_000, touchIntervalMs }: SessionStoreOptions): SessionConfig {
  wholeNumber('session: idleMs', idleMs, { min: 1000, max: MAX_LIFETIME_MS });
  wholeNumber('session: absoluteMs', absoluteMs, { min: 1000, max: MAX_LIFETIME_MS });
  const touch = wholeNumber('session: touchIntervalMs', touchIntervalMs ?? Math.floor(idleMs / 10), { min: 0 });
  return { redis, keys, idleMs, absoluteMs, touchIntervalMs: touch };
}

/** Infrastructure failures become SessionError; a caller's mistake (TypeError) stays what it is. */
const guard = <T>(op: string, p: Promise<T>) =>
  p.catch((cause: unknown) => {
    throw cause instanceof TypeError ? cause : new SessionError(op, { cause });
  });

/**
 * Builds the store. Does no I/O.
 *
 * @example
 * const sessions = createSessionStore({ redis: createRedis(env), keys });
 * const ended = await sessions.revokeAll(userId, { except: await c.var.session.handle() });
 */
export function createSessionStore(options: SessionStoreOptions): SessionStore {
  const cfg = sessionConfig(options);
  const { redis, keys } = cfg;
  const sess = (handle: string) => keys.key('sess', handle);
  const index = (userId: string) => keys.key('user-sess', checkUser(userId));
  const handles = async (userId: string) => (await redis.zrange<unknown[]>(index(userId), 0, -1)).map(String);
  const revoke = (userId: string, hs: string[]) =>
    // Session keys live in other slots than the index, so this is one pipeline rather than one script.
    Promise.all([...hs.map((h) => runScript(redis, SCRIPTS.revoke, [sess(h)], [userId])), redis.zrem(index(userId), ...hs)]).then((r) => r.slice(0, -1).filter((n) => n === 1).length);
  return {
    open: <T extends SessionData = SessionData>(request: Parameters<SessionStore['open']>[0]) => new RequestSession(cfg, request) as Session as Session<T>,
    listSessions: (userId) =>
      guard('list', (async () => {
        const all = await handles(userId);
        const loaded = (await Promise.all(all.map((h) => runScript(redis, SCRIPTS.load, [sess(h)], [keys.key('user-sess', ''), h])))).map(parseLoad);
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
    revokeSession: (userId, handle) => (SESSION_ID.test(handle) ? guard('revoke', revoke(userId, [handle]).then((n) => n === 1)) : Promise.resolve(false)),
    revokeAll: (userId, { except } = {}) =>
      guard('revoke', handles(userId).then((all) => {
        const targets = all.filter((h) => h !== except);
        return targets.length ? revoke(userId, targets) : 0;
      })),
  };
}
