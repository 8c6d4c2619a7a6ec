/**
 * POST /auth/login's limits beyond the per-IP one (auth.security.test.ts): the per-account throttle
 * that stops distributed guessing (LOGIN_ACCOUNT_LIMIT failed tries per hour from devices that never
 * logged in to the account), the device cookie that exempts the owner's devices from it (so an
 * attacker cannot lock the owner out), and the RateLimit fields of the answers.
 */
import { describe, expect, test } from 'vitest';
import { call, env, expectProblem, freshIp, PASSWORD, register } from './auth.support.ts';

const ACCOUNT_LIMIT = Number(env.LOGIN_ACCOUNT_LIMIT || 20);

/** A login carrying the device cookie `did` (and no session). */
async function attempt(ip: string, username: string, password: string, did?: string) {
  return call('/auth/login', { method: 'POST', ip, body: { username, password }, ...(did ? { headers: { cookie: `did=${did}` } } : {}) });
}
const didOf = (r: { res: Response }) => r.res.headers.getSetCookie().find((l) => l.startsWith('did='));

describe('the device cookie', () => {
  test('a successful login sets it: HttpOnly, SameSite=Strict, 30 days; a failed one does not', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const bad = await attempt(ip, u.username, 'wrong password');
    expect(bad.status).toBe(401);
    expect(didOf(bad)).toBeUndefined();
    const ok = await attempt(ip, u.username, PASSWORD);
    expect(ok.status, ok.text).toBe(200);
    // One sid cookie, the new session's (a browser keeps the last Set-Cookie of a name).
    expect(ok.res.headers.getSetCookie().filter((l) => l.startsWith('sid=')), ok.cookieLine).toHaveLength(1);
    expect(ok.cookieLine).toMatch(/^sid=[A-Za-z0-9_-]{43}; Max-Age=\d+/);
    const line = didOf(ok)!;
    expect(line).toMatch(/^did=[A-Za-z0-9_-]{43};/);
    expect(line).toMatch(/HttpOnly/i);
    expect(line).toMatch(/SameSite=Strict/i);
    expect(line).toMatch(/Max-Age=2592000/);
    // The same device logging in again keeps its token.
    const did = /^did=([^;]+)/.exec(line)![1]!;
    expect(/^did=([^;]+)/.exec(didOf(await attempt(ip, u.username, PASSWORD, did))!)![1]).toBe(did);
  });

  test('login answers carry the RateLimit fields of both limits (untrusted) or of the device\'s own (trusted)', async () => {
    const ip = freshIp();
    const u = await register(ip);
    const first = await attempt(ip, u.username, 'wrong password');
    expect(first.res.headers.get('ratelimit-policy')).toContain('"login";q=5;w=900');
    expect(first.res.headers.get('ratelimit-policy')).toContain(`"login-account";q=${ACCOUNT_LIMIT};w=3600`);
    expect(first.res.headers.get('ratelimit')).toContain('"login";r=4');
    const did = /^did=([^;]+)/.exec(didOf(await attempt(ip, u.username, PASSWORD))!)![1]!;
    const trusted = await attempt(ip, u.username, 'wrong password', did);
    expect(trusted.res.headers.get('ratelimit-policy')).toContain('"login";q=5');
    expect(trusted.res.headers.get('ratelimit-policy')).not.toContain('login-account');
  });
});

describe('per account: distributed guessing is throttled, the owner is not locked out', () => {
  test(`${ACCOUNT_LIMIT} failures from as many addresses: the next address is refused (login-account), the owner's device logs in`, { timeout: 60_000 }, async () => {
    const home = freshIp();
    const u = await register(home);
    const did = /^did=([^;]+)/.exec(didOf(await attempt(home, u.username, PASSWORD))!)![1]!;
    for (let i = 0; i < ACCOUNT_LIMIT; i++) expect((await attempt(freshIp(), u.username, 'guess')).status, `guess ${i}`).toBe(401);
    // Even the right password from a new device waits: the account is being guessed at.
    const r = await attempt(freshIp(), u.username, PASSWORD);
    const p = expectProblem(r, 429, 'rate_limited');
    expect(p['failed']).toEqual(['login-account']);
    const retryAfter = Number(r.res.headers.get('retry-after'));
    expect(retryAfter > 0 && retryAfter <= 3600, String(retryAfter)).toBe(true);
    expect(r.res.headers.get('ratelimit')).toContain('"login-account";r=0');
    // The owner, from another address but with the device that logged in before: 200.
    const owner = await attempt(freshIp(), u.username, PASSWORD, did);
    expect(owner.status, owner.text).toBe(200);
    // A forged or foreign device cookie is just an unknown device.
    expectProblem(await attempt(freshIp(), u.username, PASSWORD, 'A'.repeat(43)), 429, 'rate_limited');
  });
});
