/**
 * /auth errors: bad bodies and params (400 naming the fields), taken usernames (409), wrong
 * credentials (401), routes that need a login (401), and Redis being down (login fails closed,
 * registration does not need Redis).
 */
import { inject } from 'vitest';
import { describe, expect, test } from 'vitest';
import { badFields, call, env, envWithBrokenD1, shopEnv, expectProblem, freshIp, freshName, loggedIn, PASSWORD, register } from './auth.support.ts';

describe('POST /auth/register: bad input', () => {
  test.each([
    ['username too short', { username: 'ab', password: PASSWORD }, ['json:username']],
    ['username too long', { username: 'a'.repeat(33), password: PASSWORD }, ['json:username']],
    ['username with a space', { username: 'bad name', password: PASSWORD }, ['json:username']],
    ['username not a string', { username: 42, password: PASSWORD }, ['json:username']],
    ['password too short', { username: freshName(), password: 'short' }, ['json:password']],
    ['password too long', { username: freshName(), password: 'x'.repeat(129) }, ['json:password']],
    ['both missing', {}, ['json:password', 'json:username']],
    ['an unknown field', { username: freshName(), password: PASSWORD, admin: true }, ['json:(root)']],
    ['an array', [], ['json:(root)']],
  ])('%s → 400 naming the fields', async (_, body, fields) => {
    const r = await call('/auth/register', { method: 'POST', ip: freshIp(), body });
    const p = expectProblem(r, 400, 'bad_request');
    expect(badFields(r), r.text).toEqual(fields);
    if ('admin' in body) expect(p['detail']).toContain('admin');
  });

  test('a body that is not JSON → 400, and nothing is created', async () => {
    const username = freshName();
    const r = await call('/auth/register', { method: 'POST', ip: freshIp(), body: `{"username":"${username}",`, headers: { 'content-type': 'application/json' } });
    expectProblem(r, 400, 'bad_request');
    expect(await env.DB.prepare('SELECT 1 FROM users WHERE username = ?').bind(username).first()).toBeNull();
  });

  test('a body sent as text/plain is not read: 400 naming both fields', async () => {
    const r = await call('/auth/register', { method: 'POST', ip: freshIp(), body: JSON.stringify({ username: freshName(), password: PASSWORD }), headers: { 'content-type': 'text/plain' } });
    expectProblem(r, 400, 'bad_request');
    expect(badFields(r)).toEqual(['json:password', 'json:username']);
  });

  test('a taken username, in any case → 409, and the first account is untouched', async () => {
    const ip = freshIp();
    const u = await register(ip, freshName('Taken'));
    const r = await call('/auth/register', { method: 'POST', ip, body: { username: u.username.toUpperCase(), password: 'another password' } });
    expectProblem(r, 409, 'conflict');
    const rows = await env.DB.prepare('SELECT id FROM users WHERE username = ?').bind(u.username).all();
    expect(rows.results).toEqual([{ id: u.id }]);
    expect((await call('/auth/login', { method: 'POST', ip, body: { username: u.username, password: PASSWORD } })).status).toBe(200);
  });

  test('two registrations of one name at once: exactly one wins', async () => {
    const ip = freshIp();
    const username = freshName();
    const rs = await Promise.all([0, 1, 2].map(() => call('/auth/register', { method: 'POST', ip, body: { username, password: PASSWORD } })));
    expect(rs.map((r) => r.status).sort()).toEqual([201, 409, 409]);
  });
});

describe('POST /auth/login: errors', () => {
  test('a wrong password and an unknown user get the same 401 body', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const wrong = await call('/auth/login', { method: 'POST', ip, body: { username: u.username, password: 'not the password' } });
    const unknown = await call('/auth/login', { method: 'POST', ip, body: { username: freshName(), password: 'not the password' } });
    expectProblem(wrong, 401, 'unauthorized');
    expectProblem(unknown, 401, 'unauthorized');
    expect(wrong.text).toBe(unknown.text);
    expect(wrong.cookieLine).toBeUndefined();
    expect(unknown.cookieLine).toBeUndefined();
  });

  test('a password shorter than the registration policy is just wrong (401), not a 400', async () => {
    const ip = freshIp();
    const u = await register(ip);
    expectProblem(await call('/auth/login', { method: 'POST', ip, body: { username: u.username, password: 'x' } }), 401, 'unauthorized');
  });

  test.each([
    ['no password', { username: 'someone' }, ['json:password']],
    ['an empty password', { username: 'someone', password: '' }, ['json:password']],
    ['a username with a colon', { username: 'ip:1.2.3.4', password: PASSWORD }, ['json:username']],
    ['an unknown field', { username: 'someone', password: PASSWORD, remember: true }, ['json:(root)']],
  ])('%s → 400 naming the fields', async (_, body, fields) => {
    const r = await call('/auth/login', { method: 'POST', ip: freshIp(), body });
    expectProblem(r, 400, 'bad_request');
    expect(badFields(r)).toEqual(fields);
  });

  test('Redis down: 503 problem+json (fails closed) and no session', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const down = { ...shopEnv, UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') };
    const r = await call('/auth/login', { method: 'POST', ip, body: { username: u.username, password: PASSWORD }, env: down });
    const p = expectProblem(r, 503, 'unavailable');
    expect(r.res.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(r.cookieLine).toBeUndefined();
    expect(r.text).not.toContain(inject('gatewayToken'));
    expect(JSON.stringify(p)).not.toContain('127.0.0.1');
  });

  test('D1 down: 503 problem+json with Retry-After, not a 401 nor a 500', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const r = await call('/auth/login', { method: 'POST', ip, body: { username: u.username, password: PASSWORD }, env: envWithBrokenD1() });
    expectProblem(r, 503, 'unavailable');
    expect(r.res.headers.get('retry-after')).toBe('5');
    expect(r.text).not.toContain('D1_ERROR');
    expectProblem(await call('/auth/register', { method: 'POST', ip, body: { username: freshName(), password: PASSWORD }, env: envWithBrokenD1() }), 503, 'unavailable');
  });

  test('Redis down: registration still works (D1 only; the per-IP limit fails open)', async () => {
    const down = { ...shopEnv, UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') };
    const username = freshName();
    const r = await call('/auth/register', { method: 'POST', ip: freshIp(), body: { username, password: PASSWORD }, env: down });
    expect(r.status, r.text).toBe(201);
    expect(r.res.headers.get('ratelimit-status')).toBe('unavailable');
  });
});

describe('routes that need a login', () => {
  test.each([
    ['GET', '/auth/sessions'],
    ['POST', '/auth/logout-all'],
    ['DELETE', `/auth/sessions/${'A'.repeat(43)}`],
  ])('%s %s without a session → 401', async (method, path) => {
    expectProblem(await call(path, { method, ip: freshIp() }), 401, 'unauthorized');
  });

  test('a cookie that is well-formed but unknown → 401, and it is not echoed back', async () => {
    const r = await call('/auth/sessions', { ip: freshIp(), sid: 'B'.repeat(43) });
    expectProblem(r, 401, 'unauthorized');
    expect(r.text).not.toContain('B'.repeat(43));
  });

  test('POST /auth/logout without a session → 204 and no cookie set', async () => {
    const r = await call('/auth/logout', { method: 'POST', ip: freshIp() });
    expect(r.status, r.text).toBe(204);
    expect(r.cookieLine).toBeUndefined();
  });

  test('DELETE /auth/sessions/:id with a malformed id → 400 naming it', async () => {
    const ip = freshIp();
    const { sid } = await loggedIn(ip);
    const r = await call('/auth/sessions/not-a-handle', { method: 'DELETE', ip, sid });
    expectProblem(r, 400, 'bad_request');
    expect(badFields(r)).toEqual(['param:id']);
  });

  test('DELETE /auth/sessions/:id of an unknown handle → 404', async () => {
    const ip = freshIp();
    const { sid } = await loggedIn(ip);
    expectProblem(await call(`/auth/sessions/${'C'.repeat(43)}`, { method: 'DELETE', ip, sid }), 404, 'not_found');
  });

  test('POST /auth/logout-all?keepCurrent=yes → 400 naming it, and nothing is revoked', async () => {
    const ip = freshIp();
    const { sid } = await loggedIn(ip);
    const r = await call('/auth/logout-all?keepCurrent=yes', { method: 'POST', ip, sid });
    expectProblem(r, 400, 'bad_request');
    expect(badFields(r)).toEqual(['query:keepCurrent']);
    expect((await call('/auth/sessions', { ip, sid })).status).toBe(200);
  });
});
