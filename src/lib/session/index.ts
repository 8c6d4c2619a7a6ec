/**
 * Sessions in Redis for Workers, counted in round trips. The core (this entry) knows nothing of HTTP;
 * `edge-redis/hono`'s `session()` middleware reads and writes the cookie.
 *
 * - The id is 256 random bits (base64url) and lives only in the cookie; Redis holds the session under
 *   SHA-256(id), so a dump or a `SCAN` leaks no usable id. That hash doubles as the non-secret handle
 *   for listing and revoking.
 * - One Redis HASH per session, written field by field (HSET/HDEL of what changed, values JSON), so two
 *   concurrent requests of one session keep each other's updates. Meta fields start with `_`, which is
 *   why user keys may not.
 * - Lazy: nothing touches Redis until the handler reads, and nothing is written (no Set-Cookie either)
 *   until something is stored, so bots and anonymous visitors cost nothing.
 * - Load = 1 read-only script (HGETALL + PTTL + TIME, and the user index's ZSCORE). Save = 1 script, only when something changed or
 *   a touch is due, awaited after the handler: the next request (a redirect after login) must see it.
 * - Expiry: rolling idle timeout capped by an absolute lifetime, computed in the script from Redis
 *   time; every write sends the cookie again with Max-Age = the TTL just set, so they never drift.
 * - A cookie that is malformed, unknown or expired means a fresh anonymous session, never an error. It
 *   is not cleared on its own: clearing it could race a concurrent login's new cookie; the next stored
 *   value replaces it.
 * - A user's index lists their sessions, and a session bound to a user is valid only while listed
 *   (checked inside the load and save scripts: ./scripts.ts). So "log out everywhere" cannot miss
 *   a session, even after Redis lost the index: those sessions are then logged out.
 * - Redis down fails closed: every operation rejects with `SessionError` (503 through the middleware).
 *
 * Layout: ./types.ts (the API), ./store.ts (the store, per-user operations), ./request.ts (one
 * request's session), ./plan.ts (what a save writes, pure), ./scripts.ts (Lua).
 *
 * @example
 * const sessions = createSessionStore({ redis, keys, idleMs: 1_800_000 });
 * app.use(session({ store: sessions })); // edge-redis/hono
 * app.post('/login', async (c) => { await c.var.session.login(userId); return c.body(null, 204); });
 */
export { SessionError } from '../errors.ts';
export { SCRIPTS } from './scripts.ts';
export { createSessionStore } from './store.ts';
export type * from './types.ts';
