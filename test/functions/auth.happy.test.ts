/**
 * /auth happy paths through the Worker, D1 and real Redis: register, log in, list, revoke and log
 * out, with the cookie carried by hand; plus the round trips of a login.
 */
import { describe, expect, test } from 'vitest';
import { hashPassword, verifyPassword } from '../../src/functions/password.ts';
import { countTrips } from '../support/round-trips.ts';
import { call, env, freshIp, freshName, login, loggedIn, PASSWORD, register } from './auth.support.ts';

type SessionItem = { id: string; createdAt: string; lastSeenAt: string; expiresAt: string; userAgent: string | null; current: boolean };

async function sessionsOf(ip: string, sid: string): Promise<SessionItem[]> {
  const r = await call('/auth/sessions', { ip, sid });
  expect(r.status, r.text).toBe(200);
  return (r.body as { items: SessionItem[] }).items;
}

describe('POST /auth/register', () => {
  test('creates the user with a PBKDF2 hash in D1 and no session', async () => {
    const ip = freshIp();
    const username = freshName('Reg');
    const r = await call('/auth/register', { method: 'POST', ip, body: { username, password: PASSWORD } });
    expect(r.status, r.text).toBe(201);
    expect(r.body).toEqual({ id: expect.any(Number), username });
    expect(r.cookieLine).toBeUndefined();
    expect(r.res.headers.get('cache-control')).toBe('no-store');

    const row = await env.DB.prepare('SELECT id, username, password_hash FROM users WHERE id = ?').bind((r.body as { id: number }).id).first<{ id: number; username: string; password_hash: string }>();
    expect(row?.username).toBe(username);
    expect(row?.password_hash).toMatch(/^pbkdf2-sha256\$100000\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
    expect(await verifyPassword(PASSWORD, row!.password_hash)).toBe(true);
    expect(await verifyPassword(`${PASSWORD}!`, row!.password_hash)).toBe(false);
  });
});

describe('POST /auth/login', () => {
  test('answers the user, sets an HttpOnly SameSite session cookie, and the session lists itself', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const r = await call('/auth/login', { method: 'POST', ip, body: { username: u.username, password: PASSWORD }, headers: { 'user-agent': 'happy-test/1.0' } });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({ id: u.id, username: u.username });
    expect(r.res.headers.get('cache-control')).toBe('no-store');
    expect(r.cookieLine).toMatch(/^sid=[A-Za-z0-9_-]{43}; Max-Age=\d+; Path=\/; HttpOnly; SameSite=Lax$/);

    const items = await sessionsOf(ip, r.sid!);
    expect(items).toEqual([{ id: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), createdAt: expect.any(String), lastSeenAt: expect.any(String), expiresAt: expect.any(String), userAgent: 'happy-test/1.0', current: true }]);
    // The listed id is a handle, never the cookie itself.
    expect(items[0]!.id).not.toBe(r.sid);
    expect(Date.parse(items[0]!.expiresAt)).toBeGreaterThan(Date.parse(items[0]!.createdAt));
  });

  test('matches the username regardless of case and answers it as registered', async () => {
    const ip = freshIp();
    const u = await register(ip, freshName('MiXeD'));
    const r = await call('/auth/login', { method: 'POST', ip, body: { username: u.username.toLowerCase(), password: PASSWORD } });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({ id: u.id, username: u.username });
  });

  test('regenerates the session id and keeps the anonymous cart', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const added = await call('/cart/items', { method: 'POST', ip, body: { productId: 3, quantity: 2 } });
    expect(added.status, added.text).toBe(200);
    const anon = added.sid!;
    expect(anon).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const sid = await login(ip, u.username, PASSWORD, anon);
    expect(sid).not.toBe(anon);
    const mine = await call('/cart', { ip, sid });
    expect(mine.status, mine.text).toBe(200);
    expect((mine.body as { items: { productId: number; quantity: number }[] }).items).toEqual([expect.objectContaining({ productId: 3, quantity: 2 })]);
    // The old id is gone: it is an anonymous visitor with an empty cart now.
    const old = await call('/cart', { ip, sid: anon });
    expect(old.body).toEqual({ items: [], total: 0 });
    expect((await call('/auth/sessions', { ip, sid: anon })).status).toBe(401);
  });

  test('costs 3 round trips: the default limit, then the login limits + session load, then the save with the limits\' success', async () => {
    const ip = freshIp();
    const u = await register(ip);
    // The same flow once first, so every script is in Redis's cache (a first EVALSHA answers
    // NOSCRIPT and costs one more trip for the EVAL).
    await login(ip, u.username, PASSWORD, (await call('/cart/items', { method: 'POST', ip, body: { productId: 4, quantity: 1 } })).sid);
    const anon = (await call('/cart/items', { method: 'POST', ip, body: { productId: 4, quantity: 1 } })).sid;
    const counted = await countTrips(env.UPSTASH_REDIS_REST_URL, () => call('/auth/login', { method: 'POST', ip, sid: anon, body: { username: u.username, password: PASSWORD } }));
    expect(counted.result.status, counted.result.text).toBe(200);
    // Commands of each HTTP request to the gateway, sorted (issue order within a batch is not the point).
    expect(counted.trips.map((t) => [...t.commands].sort())).toEqual([
      ['evalsha'], // API_RATE_LIMIT per IP (sliding window), before any POST handler
      ['evalsha', 'evalsha_ro'], // the login limits (per IP + username, per account), and the session load, together
      // The new session, the old one deleted, the user's index, and the limits told of the success.
      ['del', 'evalsha', 'evalsha', 'pexpire', 'zadd', 'zremrangebyscore'],
    ]);
    expect(counted.count).toBe(3);
    expect(counted.criticalPath).toBe(3);
  });

  test('upgrades a hash made with fewer iterations after a good login', async () => {
    const ip = freshIp();
    const username = freshName();
    const weak = await hashPassword(PASSWORD, 1000);
    await env.DB.prepare('INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)').bind(username, weak, Date.now()).run();
    const r = await call('/auth/login', { method: 'POST', ip, body: { username, password: PASSWORD } });
    expect(r.status, r.text).toBe(200);
    const row = await env.DB.prepare('SELECT password_hash FROM users WHERE username = ?').bind(username).first<{ password_hash: string }>();
    expect(row?.password_hash).toMatch(/^pbkdf2-sha256\$100000\$/);
    expect(await verifyPassword(PASSWORD, row!.password_hash)).toBe(true);
  });
});

describe('sessions of a user', () => {
  test('two logins list two sessions, the current one marked', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const laptop = await login(ip, u.username, PASSWORD, undefined, 'laptop');
    const phone = await login(ip, u.username, PASSWORD, undefined, 'phone');
    const seen = await sessionsOf(ip, phone);
    expect(seen.map((s) => [s.userAgent, s.current]).sort()).toEqual([['laptop', false], ['phone', true]]);
    const fromLaptop = await sessionsOf(ip, laptop);
    expect(fromLaptop.find((s) => s.current)?.userAgent).toBe('laptop');
  });

  test('DELETE /auth/sessions/:id ends another session of mine; its cookie is anonymous afterwards', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const laptop = await login(ip, u.username, PASSWORD, undefined, 'laptop');
    const phone = await login(ip, u.username, PASSWORD, undefined, 'phone');
    const target = (await sessionsOf(ip, phone)).find((s) => !s.current)!;
    const r = await call(`/auth/sessions/${target.id}`, { method: 'DELETE', ip, sid: phone });
    expect(r.status, r.text).toBe(204);
    expect(r.cookieLine).toBeUndefined(); // this session is untouched
    expect((await call('/auth/sessions', { ip, sid: laptop })).status).toBe(401);
    expect((await sessionsOf(ip, phone)).map((s) => s.userAgent)).toEqual(['phone']);
  });

  test('DELETE /auth/sessions/:id of the current session logs this one out and clears the cookie', async () => {
    const ip = freshIp();
    const { sid } = await loggedIn(ip);
    const [me] = await sessionsOf(ip, sid);
    const r = await call(`/auth/sessions/${me!.id}`, { method: 'DELETE', ip, sid });
    expect(r.status, r.text).toBe(204);
    expect(r.cookieLine).toMatch(/^sid=; Max-Age=0/);
    expect((await call('/auth/sessions', { ip, sid })).status).toBe(401);
  });
});

describe('POST /auth/logout and /auth/logout-all', () => {
  test('logout ends the session and clears the cookie', async () => {
    const ip = freshIp();
    const { sid } = await loggedIn(ip);
    const r = await call('/auth/logout', { method: 'POST', ip, sid });
    expect(r.status, r.text).toBe(204);
    expect(r.cookieLine).toMatch(/^sid=; Max-Age=0/);
    expect((await call('/auth/sessions', { ip, sid })).status).toBe(401);
  });

  test('logout-all ends every session, this one included', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const a = await login(ip, u.username);
    const b = await login(ip, u.username);
    const c = await login(ip, u.username);
    const r = await call('/auth/logout-all', { method: 'POST', ip, sid: c });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({ revoked: 3 });
    expect(r.cookieLine).toMatch(/^sid=; Max-Age=0/);
    for (const sid of [a, b, c]) expect((await call('/auth/sessions', { ip, sid })).status).toBe(401);
    // The user can log in again afterwards.
    expect(await sessionsOf(ip, await login(ip, u.username))).toHaveLength(1);
  });

  test('logout-all?keepCurrent=true ends the others: a request with another cookie is anonymous afterwards', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const other = await login(ip, u.username);
    const mine = await login(ip, u.username);
    // The other device had something in its cart; afterwards it is an anonymous visitor.
    expect((await call('/cart/items', { method: 'POST', ip, sid: other, body: { productId: 5, quantity: 1 } })).status).toBe(200);
    const r = await call('/auth/logout-all?keepCurrent=true', { method: 'POST', ip, sid: mine });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({ revoked: 1 });
    expect(r.cookieLine).toBeUndefined();
    expect(await sessionsOf(ip, mine)).toEqual([expect.objectContaining({ current: true })]);
    expect((await call('/auth/sessions', { ip, sid: other })).status).toBe(401);
    expect((await call('/cart', { ip, sid: other })).body).toEqual({ items: [], total: 0 });
  });
});

describe('documentation', () => {
  test('/openapi.json describes the auth and cart routes', async () => {
    const r = await call('/openapi.json', { ip: freshIp() });
    expect(r.status, r.text).toBe(200);
    const paths = (r.body as { paths: Record<string, Record<string, unknown>> }).paths;
    expect(Object.keys(paths['/auth/login'] ?? {})).toEqual(['post']);
    expect(Object.keys(paths['/auth/sessions/{id}'] ?? {})).toEqual(['delete']);
    expect(Object.keys(paths['/cart/items/{productId}'] ?? {}).sort()).toEqual(['delete', 'patch']);
    expect(JSON.stringify(paths['/cart/items/{productId}'])).toContain('"in":"path"');
  });

  test('a password is the same password composed or decomposed (NFKC)', async () => {
    const ip = freshIp();
    const u = await register(ip, freshName(), 'caf\u00e9 au lait!');
    expect((await call('/auth/login', { method: 'POST', ip, body: { username: u.username, password: 'cafe\u0301 au lait!' } })).status).toBe(200);
  });
});
