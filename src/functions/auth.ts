/**
 * Accounts and sessions: register, log in and out, list and revoke the sessions of the logged-in user.
 *
 * - Passwords: PBKDF2-SHA-256 through WebCrypto (./password.ts), in D1 `users.password_hash`.
 *   Usernames are unique case-insensitively (`UNIQUE COLLATE NOCASE`); registering does not log in.
 * - Login: validated first (a malformed body costs no try and no Redis), then limited as OWASP
 *   says (./login-limits.ts): `LOGIN_RATE_LIMIT` FAILED tries per 15 minutes per IP + lower-cased
 *   username (a success does not count and clears them), and `LOGIN_ACCOUNT_LIMIT` failed tries per
 *   hour per username from devices that never logged in to it, a throttle that stops distributed
 *   guessing without letting anyone lock the owner out (their devices are trusted). Fails CLOSED
 *   (Redis down → 503). A wrong password and an unknown user get the same 401 after the same PBKDF2
 *   work. Success regenerates the session id and keeps the session's data, so an anonymous cart
 *   carries over.
 * - Bodies are strict: an unknown JSON field is a 400 naming it (a typo such as `pasword` should
 *   not look like a wrong password).
 * - "Log out everywhere" (`POST /auth/logout-all`) ends every session of the user, this one too;
 *   `?keepCurrent=true` spares this one.
 * - Every answer is `Cache-Control: no-store`.
 *
 * Round trips to Redis, the app-wide per-IP check included (for GET it shares the session load's
 * trip; writes wait for it), once Redis has the scripts cached:
 * - register 1: the check (the rest is D1);
 * - login 3: the check → the login limits + the session load, together → the save (new session, the
 *   user's index, the old session deleted) with the limits' success (failures cleared, device trusted);
 *   a failed login 2;
 * - logout 2: the check → DEL (1 without a cookie);
 * - GET sessions 3: the check + the load → ZRANGE of the user's index → a load per session;
 * - DELETE sessions/:id 3: the check → the load → the owner-checked revoke + ZREM;
 * - logout-all 5: the check → the load → ZRANGE → the revokes + ZREM → DEL + ZREM of this one.
 * A session due for a touch (every idleMs / 10) adds its save to the last trip or one more.
 */
import { Hono, type MiddlewareHandler } from 'hono';
import { z } from 'zod';
import type { AppEnv, SessionShape } from '../env.ts';
import { AppError } from '../errors.ts';
import type { Session } from 'edge-redis/session';
import { d1 } from './d1.ts';
import { admitLogin, loginSucceeded } from './login-limits.ts';
import { doc, validate } from './openapi.ts';
import { hashPassword, needsRehash, verifyPassword, verifyUnknownUser } from './password.ts';

const Username = z
  .string()
  .min(3)
  .max(32)
  .regex(/^[A-Za-z0-9_.-]+$/, 'Only letters, digits, "_", "." and "-"');
const Register = z.strictObject({ username: Username, password: z.string().min(8).max(128) });
// Login does not restate the password policy: a password that could never have been registered is
// simply wrong (401, one try spent), which also keeps working if the policy tightens later.
const Login = z.strictObject({ username: Username, password: z.string().min(1).max(128) });
const User = z.object({ id: z.number().int(), username: z.string() });
const SessionId = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'A session id from GET /auth/sessions');
const SessionItem = z.object({
  id: SessionId,
  createdAt: z.iso.datetime(),
  lastSeenAt: z.iso.datetime(),
  expiresAt: z.iso.datetime(),
  userAgent: z.string().nullable(),
  current: z.boolean(),
});
const KeepCurrent = z.object({ keepCurrent: z.enum(['true', 'false']).optional().describe('Spare the session making this request. Default false.') });

type UserRow = { id: number; username: string; password_hash: string };

const auth = new Hono<AppEnv>();

auth.use(async (c, next) => {
  await next();
  c.header('Cache-Control', 'no-store');
});

/** The logged-in user of this request's session (1 round trip to load it), else 401. */
async function requireUser(session: Session<SessionShape>): Promise<string> {
  const userId = await session.getUser();
  if (userId === undefined) throw new AppError('unauthorized', { detail: 'Log in first.' });
  return userId;
}

/**
 * Starts loading the session now, so its read leaves in the same request to Redis as the login
 * limit check (the client batches a task's commands). `login()` awaits the same load; a failure is
 * remembered by the session and rethrown there, so swallowing it here loses nothing.
 */
const preloadSession: MiddlewareHandler<AppEnv> = async (c, next) => {
  c.get('session').handle().catch(() => undefined);
  await next();
};

auth.post('/register', doc({
  tags: ['auth'], summary: 'Create an account',
  description: 'Usernames are unique regardless of case. Does not log in. Unknown fields are refused.',
  responses: { 201: { description: 'Created', body: User }, 409: { description: 'The username is taken' } },
}), validate('json', Register), async (c) => {
  const { username, password } = c.req.valid('json');
  const hash = await hashPassword(password);
  // One statement: the UNIQUE index decides, so two racing registrations cannot both win.
  const row = await d1(
    c.env.DB.prepare('INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING RETURNING id, username')
      .bind(username, hash, Date.now())
      .first<{ id: number; username: string }>(),
    'account database',
  );
  if (!row) throw new AppError('conflict', { detail: 'That username is taken.' });
  return c.json({ id: row.id, username: row.username }, 201);
});

auth.post('/login', doc({
  tags: ['auth'], summary: 'Log in',
  description: 'Sets a new session cookie (the id is regenerated; the session\'s cart is kept) and a device cookie. LOGIN_RATE_LIMIT failed tries per 15 minutes per IP + username (a success clears them), LOGIN_ACCOUNT_LIMIT failed tries per hour per username from devices that never logged in to it; fails closed.',
  responses: { 200: { description: 'Logged in', body: User }, 401: { description: 'Wrong username or password' }, 429: { description: 'Too many failed tries (`failed` names the limit: `login` or `login-account`)' } },
}), validate('json', Login), preloadSession, async (c) => {
  const { username, password } = c.req.valid('json');
  const { attempt, headers } = await admitLogin(c, username);
  const row = await d1(c.env.DB.prepare('SELECT id, username, password_hash FROM users WHERE username = ?1').bind(username).first<UserRow>(), 'account database');
  const ok = row ? await verifyPassword(password, row.password_hash) : await verifyUnknownUser(password);
  if (!row || !ok) throw new AppError('unauthorized', { detail: 'Wrong username or password.', headers }); // the attempt stays counted
  const session = c.get('session');
  await session.login(String(row.id));
  // The new session and the attempt's success leave in one round trip.
  await loginSucceeded(c, attempt, session.save());
  if (needsRehash(row.password_hash)) {
    // An older, cheaper hash: upgrade it now that the password is known. Off the response path.
    c.executionCtx.waitUntil(
      hashPassword(password)
        .then((h) => c.env.DB.prepare('UPDATE users SET password_hash = ?1 WHERE id = ?2 AND password_hash = ?3').bind(h, row.id, row.password_hash).run())
        .catch((e: unknown) => console.error(`[auth] rehash failed: ${e instanceof Error ? e.name : typeof e}`)),
    );
  }
  return c.json({ id: row.id, username: row.username }, 200);
});

auth.post('/logout', doc({
  tags: ['auth'], summary: 'Log out', security: 'session',
  description: 'Ends this session and clears the cookie; 204 whether or not there was one.',
  responses: { 204: { description: 'Logged out' } },
}), (c) => {
  c.get('session').destroy();
  return c.body(null, 204);
});

auth.get('/sessions', doc({
  tags: ['auth'], summary: 'The logged-in user\'s sessions', security: 'session',
  description: 'Most recently seen first; `current` marks the one making this request. `id` is a non-secret handle, not the cookie.',
  responses: { 200: { description: 'Sessions', body: z.object({ items: z.array(SessionItem) }) }, 401: { description: 'Not logged in' } },
}), async (c) => {
  const userId = await requireUser(c.get('session'));
  const [list, current] = await Promise.all([c.var.services.sessions.listSessions(userId), c.get('session').handle()]);
  const iso = (ms: number) => new Date(ms).toISOString();
  return c.json({
    items: list.map((s) => ({
      id: s.handle, createdAt: iso(s.createdAt), lastSeenAt: iso(s.lastSeenAt), expiresAt: iso(s.expiresAt), userAgent: s.userAgent ?? null, current: s.handle === current,
    })),
  });
});

auth.delete('/sessions/:id', doc({
  tags: ['auth'], summary: 'End one of your sessions', security: 'session',
  responses: { 204: { description: 'Ended' }, 401: { description: 'Not logged in' }, 404: { description: 'No such session of yours' } },
}), validate('param', z.object({ id: SessionId })), async (c) => {
  const userId = await requireUser(c.get('session'));
  const { id } = c.req.valid('param');
  const session = c.get('session');
  if (id === (await session.handle())) {
    session.destroy(); // also clears this response's cookie
    return c.body(null, 204);
  }
  // The revoke script checks the owner, so another user's handle is "not found", not a 403 oracle.
  if (!(await c.var.services.sessions.revokeSession(userId, id))) throw new AppError('not_found', { detail: 'No such session.' });
  return c.body(null, 204);
});

auth.post('/logout-all', doc({
  tags: ['auth'], summary: 'Log out everywhere', security: 'session',
  description: 'Ends every session of the user, this one included unless `keepCurrent=true`. Answers how many ended.',
  responses: { 200: { description: 'Sessions ended', body: z.object({ revoked: z.number().int() }) }, 401: { description: 'Not logged in' } },
}), validate('query', KeepCurrent), async (c) => {
  const userId = await requireUser(c.get('session'));
  const keep = c.req.valid('query').keepCurrent === 'true';
  const session = c.get('session');
  const current = await session.handle();
  const others = await c.var.services.sessions.revokeAll(userId, { except: current });
  if (keep) return c.json({ revoked: others }, 200);
  session.destroy(); // ends this one in the save after the handler, and clears the cookie
  return c.json({ revoked: others + 1 }, 200);
});

export default auth;
