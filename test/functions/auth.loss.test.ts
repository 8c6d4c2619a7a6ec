/**
 * Logins and sessions when Redis forgets, on a private Redis of this file (test/support/faults.ts).
 * What may be lost: sessions (logged out), the failed-login counts (reset), a device's trust (it is
 * throttled like an unknown device until its next login). What never happens: a correct password
 * counted as a failure, an owner refused because of their own logins, an error other than 401/429
 * for a login, a session that comes back after a log-out, a session that outlives "log out everywhere"
 * because Redis lost the user's session index.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { envOn, privateRedis, type PrivateRedis } from '../support/faults.ts';
import { call, freshIp, freshName, PASSWORD, shopEnv, type Call } from './auth.support.ts';

let lab: PrivateRedis;
let own: Env;
beforeAll(async () => {
  lab = await privateRedis();
  own = envOn(lab, { REDIS_KEY_APP: shopEnv.REDIS_KEY_APP });
});
afterAll(() => lab?.stop());

const at = (path: string, c: Omit<Call, 'env'>) => call(path, { ...c, env: own });
async function registered(ip: string): Promise<string> {
  const username = freshName();
  expect((await at('/auth/register', { method: 'POST', ip, body: { username, password: PASSWORD } })).status).toBe(201);
  return username;
}
async function login(ip: string, username: string, password = PASSWORD, did?: string) {
  return at('/auth/login', { method: 'POST', ip, body: { username, password }, ...(did ? { headers: { cookie: `did=${did}` } } : {}) });
}
const didOf = (r: { res: Response }) => /^did=([^;]+)/.exec(r.res.headers.getSetCookie().find((l) => l.startsWith('did=')) ?? '')?.[1];

describe('flushed between two steps', () => {
  test('between failed tries: the counts reset (the lost part), the owner still logs in', async () => {
    const ip = freshIp();
    const u = await registered(ip);
    for (let i = 0; i < 5; i++) expect((await login(ip, u, 'wrong')).status).toBe(401);
    expect((await login(ip, u)).status).toBe(429);
    await lab.flushall();
    expect((await login(ip, u)).status).toBe(200);
  });

  test('between login and use: the session is gone (logged out, 401), never an error', async () => {
    const ip = freshIp();
    const u = await registered(ip);
    const sid = (await login(ip, u)).sid!;
    expect((await at('/auth/sessions', { ip, sid })).status).toBe(200);
    await lab.flushall();
    expect((await at('/auth/sessions', { ip, sid })).status).toBe(401);
  });
});

describe('each key deleted alone', () => {
  test('the session key, the failure logs, the device trust: a login always answers 200 or 401, and the right password is never counted', async () => {
    const ip = freshIp();
    const u = await registered(ip);
    const first = await login(ip, u);
    const did = didOf(first)!;
    const prefix = `${own.REDIS_KEY_APP}:${own.APP_ENV}`;
    const mine = async () => (await lab.keys(`${prefix}:*`)).filter((k) => k.includes(`{${u.toLowerCase()}}`) || k.includes(':sess:') || k.includes(':user-sess:'));
    for (const key of await mine()) {
      await login(ip, u, 'wrong', did); // one failure to be counted somewhere
      await lab.del(key);
      const r = await login(ip, u, PASSWORD, did);
      expect(r.status, `${key}: ${r.text}`).toBe(200);
    }
  });
});

describe('restarted empty in the middle of a login', () => {
  test('between the limits check and the session save: 200 with a session that works', async () => {
    const ip = freshIp();
    const u = await registered(ip);
    let restarted = false;
    const DB = new Proxy(own.DB, {
      get: (target, prop) => (prop === 'prepare' ? (q: string) => {
        const stmt = target.prepare(q);
        if (!q.startsWith('SELECT id, username, password_hash') || restarted) return stmt;
        return new Proxy(stmt, { get: (s, p) => (p === 'bind' ? (...args: unknown[]) => {
          const bound = s.bind(...args);
          return new Proxy(bound, { get: (b, m) => (m === 'first' ? async () => {
            restarted = true;
            await lab.restart();
            return b.first();
          } : Reflect.get(b, m)) });
        } : Reflect.get(s, p)) });
      } : Reflect.get(target, prop)),
    });
    const r = await call('/auth/login', { method: 'POST', ip, body: { username: u, password: PASSWORD }, env: { ...own, DB } });
    expect(restarted).toBe(true);
    expect(r.status, r.text).toBe(200);
    expect((await at('/auth/sessions', { ip, sid: r.sid })).status).toBe(200);
  });
});

describe('a random share of the keys deleted again and again', () => {
  test('the owner alternating a typo and the right password 12 times: never refused, every right password is 200', { timeout: 60_000 }, async () => {
    const ip = freshIp();
    const u = await registered(ip);
    let did: string | undefined;
    const stop = await lab.chaos(0.5, 10, `${own.REDIS_KEY_APP}:*`);
    try {
      for (let i = 0; i < 12; i++) {
        expect((await login(ip, u, 'typo', did)).status, `typo ${i}`).toBe(401);
        const ok = await login(ip, u, PASSWORD, did);
        expect(ok.status, `login ${i}: ${ok.text}`).toBe(200);
        did = didOf(ok) ?? did;
      }
    } finally {
      expect((await stop()).rounds).toBeGreaterThan(0);
    }
  });
});

describe("the user's session index lost", () => {
  test('every session of the user is logged out (401); a new login is the only one listed, and log out everywhere ends it too', async () => {
    const ip = freshIp();
    const u = await registered(ip);
    const first = await login(ip, u);
    const { id } = first.body as { id: number };
    const phone = first.sid!;
    const laptop = (await login(ip, u)).sid!;
    expect((await at('/auth/sessions', { ip, sid: phone })).status).toBe(200);
    expect(await lab.del(`${own.REDIS_KEY_APP}:${own.APP_ENV}:user-sess:${id}`)).toBe(1);
    // Before the load checked the index, both stayed logged in, and log-out-all could not find them.
    for (const sid of [phone, laptop]) expect((await at('/auth/sessions', { ip, sid })).status).toBe(401);
    const tablet = (await login(ip, u)).sid!;
    const listed = await at('/auth/sessions', { ip, sid: tablet });
    expect((listed.body as { items: unknown[] }).items).toHaveLength(1);
    const all = await at('/auth/logout-all', { method: 'POST', ip, sid: tablet });
    expect(all.status, all.text).toBe(200);
    expect(all.body).toEqual({ revoked: 1 });
    for (const sid of [phone, laptop, tablet]) expect((await at('/auth/sessions', { ip, sid })).status).toBe(401);
  });
});
