/**
 * /auth security: the login limit (failed tries count, keyed by IP + username, 429 with Retry-After
 * even for the right password), session fixation, other users' sessions, CSRF, and what never
 * appears in an answer or in D1.
 */
import { describe, expect, test } from 'vitest';
import { call, env, expectProblem, freshIp, freshName, login, loggedIn, PASSWORD, register } from './auth.support.ts';

const LIMIT = Number(env.LOGIN_RATE_LIMIT || 5);

async function attempt(ip: string, username: string, password: string) {
  return call('/auth/login', { method: 'POST', ip, body: { username, password } });
}

describe('login rate limit (LOGIN_RATE_LIMIT per 15 min per IP + username)', () => {
  test('the try past the limit → 429 with Retry-After, even with the right password', async () => {
    expect(LIMIT).toBe(5);
    const ip = freshIp();
    const u = await register(ip);
    for (let i = 0; i < LIMIT; i++) expect((await attempt(ip, u.username, 'wrong password')).status).toBe(401);
    const r = await attempt(ip, u.username, PASSWORD);
    const p = expectProblem(r, 429, 'rate_limited');
    const retryAfter = Number(r.res.headers.get('retry-after'));
    expect(Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= 900, String(retryAfter)).toBe(true);
    expect(p['retryAfter']).toBe(retryAfter);
    expect(p['failed']).toEqual(['login']);
    expect(r.cookieLine).toBeUndefined();
  });

  test('successful tries do not count (4 devices logging in leave every failed try), and a success clears the failures of its IP + username', async () => {
    const ip = freshIp();
    const u = await register(ip);
    for (let i = 0; i < 4; i++) await login(ip, u.username);
    for (let i = 0; i < LIMIT - 1; i++) expect((await attempt(ip, u.username, 'wrong password')).status).toBe(401);
    await login(ip, u.username); // clears the LIMIT - 1 failures
    for (let i = 0; i < LIMIT; i++) expect((await attempt(ip, u.username, 'wrong password')).status).toBe(401);
    expectProblem(await attempt(ip, u.username, PASSWORD), 429, 'rate_limited');
  });

  test('the count is per IP + username, the username in any case', async () => {
    const ip = freshIp();
    const u = await register(ip, freshName('Case'));
    for (let i = 0; i < LIMIT; i++) {
      const name = i % 2 ? u.username.toUpperCase() : u.username.toLowerCase();
      expect((await attempt(ip, name, 'wrong password')).status).toBe(401);
    }
    expectProblem(await attempt(ip, u.username, PASSWORD), 429, 'rate_limited');
    // Another address, same user: its own count. Same address, another user: its own count.
    expect((await attempt(freshIp(), u.username, PASSWORD)).status).toBe(200);
    const other = await register(ip);
    expect((await attempt(ip, other.username, PASSWORD)).status).toBe(200);
  });

  test('unknown usernames are limited the same way (no enumeration through the limiter)', async () => {
    const ip = freshIp();
    const ghost = freshName();
    for (let i = 0; i < LIMIT; i++) expect((await attempt(ip, ghost, 'whatever password')).status).toBe(401);
    expectProblem(await attempt(ip, ghost, 'whatever password'), 429, 'rate_limited');
  });

  test('a bad body spends no try', async () => {
    const ip = freshIp();
    const u = await register(ip);
    for (let i = 0; i < LIMIT + 2; i++) {
      expect((await call('/auth/login', { method: 'POST', ip, body: { username: u.username, password: PASSWORD, extra: 1 } })).status).toBe(400);
    }
    expect((await attempt(ip, u.username, PASSWORD)).status).toBe(200);
  });
});

describe('sessions', () => {
  test('a planted session id is not kept at login (fixation)', async () => {
    const ip = freshIp();
    const u = await register(ip);
    // The attacker gets an anonymous session and plants its id in the victim's browser.
    const planted = (await call('/cart/items', { method: 'POST', ip, body: { productId: 1, quantity: 1 } })).sid!;
    const sid = await login(ip, u.username, PASSWORD, planted);
    expect(sid).not.toBe(planted);
    expect((await call('/auth/sessions', { ip, sid: planted })).status).toBe(401);
    expect((await call('/auth/sessions', { ip, sid })).status).toBe(200);
  });

  test("DELETE /auth/sessions/:id with another user's handle → 404, and that session lives on", async () => {
    const ip = freshIp();
    const alice = await loggedIn(ip);
    const mallory = await loggedIn(ip);
    const aliceHandle = ((await call('/auth/sessions', { ip, sid: alice.sid })).body as { items: { id: string }[] }).items[0]!.id;
    expectProblem(await call(`/auth/sessions/${aliceHandle}`, { method: 'DELETE', ip, sid: mallory.sid }), 404, 'not_found');
    expect((await call('/auth/sessions', { ip, sid: alice.sid })).status).toBe(200);
  });

  test("logout-all ends only the user's own sessions", async () => {
    const ip = freshIp();
    const alice = await loggedIn(ip);
    const bob = await loggedIn(ip);
    expect((await call('/auth/logout-all', { method: 'POST', ip, sid: alice.sid })).body).toEqual({ revoked: 1 });
    expect((await call('/auth/sessions', { ip, sid: bob.sid })).status).toBe(200);
  });

  test('GET /auth/sessions lists only handles, never a cookie value', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const a = await login(ip, u.username);
    const b = await login(ip, u.username);
    const r = await call('/auth/sessions', { ip, sid: b });
    expect(r.text).not.toContain(a);
    expect(r.text).not.toContain(b);
  });
});

describe('CSRF and leaks', () => {
  test('POST /auth/logout with the cookie from another origin → 403, and the session survives', async () => {
    const ip = freshIp();
    const { sid } = await loggedIn(ip);
    expectProblem(await call('/auth/logout', { method: 'POST', ip, sid, headers: { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' } }), 403, 'forbidden');
    expectProblem(await call('/auth/logout-all', { method: 'POST', ip, sid, headers: { origin: 'https://evil.example' } }), 403, 'forbidden');
    expect((await call('/auth/sessions', { ip, sid })).status).toBe(200);
  });

  test('the same origin passes the CSRF guard', async () => {
    const ip = freshIp();
    const { sid } = await loggedIn(ip);
    expect((await call('/auth/logout', { method: 'POST', ip, sid, headers: { origin: 'http://shop.test', 'sec-fetch-site': 'same-origin' } })).status).toBe(204);
  });

  test('no answer carries the password or its hash; D1 holds no plaintext and a salt per user', async () => {
    const ip = freshIp();
    const password = `secret-${crypto.randomUUID()}`;
    const a = await register(ip, freshName(), password);
    const b = await register(ip, freshName(), password);
    const answers = [
      await call('/auth/login', { method: 'POST', ip, body: { username: a.username, password } }),
      await call('/auth/login', { method: 'POST', ip, body: { username: a.username, password: `${password}x` } }),
    ];
    const rows = (await env.DB.prepare('SELECT password_hash FROM users WHERE id IN (?, ?)').bind(a.id, b.id).all<{ password_hash: string }>()).results;
    expect(rows).toHaveLength(2);
    expect(rows[0]!.password_hash).not.toBe(rows[1]!.password_hash);
    for (const row of rows) {
      expect(row.password_hash).not.toContain(password);
      for (const r of answers) expect(r.text).not.toContain(row.password_hash.split('$')[3]!);
    }
    for (const r of answers) expect(r.text).not.toContain(password);
  });
});
