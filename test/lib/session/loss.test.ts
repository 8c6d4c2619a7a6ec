/**
 * Sessions when Redis forgets, on a private Redis of this file (test/support/faults.ts). What may be
 * lost: sessions (their holders are logged out). What never happens: a session that outlives
 * "log out everywhere". Before the load checked the user's index, losing that index (eviction, a
 * partial loss) left the user's sessions working while `revokeAll`, which finds sessions through the
 * index, could no longer end them; now a session bound to a user is valid only while the index lists
 * it, so losing the index logs those sessions out.
 */
import { Redis } from '@upstash/redis/cloudflare';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onEdgeRedisError, session, type SessionVariables } from 'edge-redis/hono';
import { keySchema } from 'edge-redis/keys';
import { createSessionStore, SCRIPTS } from 'edge-redis/session';
import { countTrips } from '../../support/round-trips.ts';
import { privateRedis, type PrivateRedis } from '../../support/faults.ts';

let lab: PrivateRedis;
let redis: Redis;
beforeAll(async () => {
  lab = await privateRedis();
  redis = new Redis({ url: lab.bindings.UPSTASH_REDIS_REST_URL, token: lab.bindings.UPSTASH_REDIS_REST_TOKEN });
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});
afterAll(() => lab?.stop());

const b64url = (b: ArrayBuffer) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const hashOf = async (id: string) => b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(id)));

function setup() {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const store = createSessionStore({ redis, keys });
  const app = new Hono<{ Variables: SessionVariables }>();
  app.onError(onEdgeRedisError);
  app.use(session({ store, cookie: { name: 'sid', secure: false } }));
  app.post('/login/:uid', async (c) => (await c.var.session.login(c.req.param('uid')), c.json({ ok: true })));
  app.get('/me', async (c) => c.json({ user: (await c.var.session.getUser()) ?? null, data: await c.var.session.all() }));
  app.post('/put', async (c) => (c.var.session.set('note', await c.req.text()), c.json({ ok: true })));
  const call = async (path: string, sid?: string, body?: string) => {
    const res = await app.request(path, { method: path === '/me' ? 'GET' : 'POST', headers: sid ? { cookie: `sid=${sid}` } : {}, ...(body !== undefined ? { body } : {}) });
    const line = res.headers.getSetCookie().find((l) => l.startsWith('sid='));
    return { status: res.status, body: (await res.json()) as { user?: string | null; data?: Record<string, unknown> }, sid: line === undefined ? undefined : /^sid=([^;]*)/.exec(line)?.[1] };
  };
  return { keys, store, call, index: (uid: string) => keys.key('user-sess', uid) };
}

describe("a user's session index lost while the sessions live", () => {
  it('every session of the user is logged out at once, so "log out everywhere" has nothing left to miss', async () => {
    const { store, call, index } = setup();
    const sids: string[] = [];
    for (let i = 0; i < 3; i++) sids.push((await call('/login/alice')).sid!);
    const bob = (await call('/login/bob')).sid!;
    for (const sid of sids) expect((await call('/me', sid)).body.user).toBe('alice');

    expect(await lab.del(index('alice'))).toBe(1);
    // The check is inside the load script: still one round trip per request.
    const { result, count, commands } = await countTrips(lab.bindings.UPSTASH_REDIS_REST_URL, () => call('/me', sids[0]));
    expect(result.body.user).toBeNull();
    expect({ count, commands }).toEqual({ count: 1, commands: ['evalsha_ro'] });
    for (const sid of sids) expect((await call('/me', sid)).body).toEqual({ user: null, data: {} });
    // Nothing to list, nothing to revoke, and the sessions stay out afterwards.
    expect(await store.listSessions('alice')).toEqual([]);
    expect(await store.revokeAll('alice')).toBe(0);
    for (const sid of sids) expect((await call('/me', sid)).body.user).toBeNull();
    // Another user's sessions are untouched.
    expect((await call('/me', bob)).body.user).toBe('bob');
  });

  it('a blind write through a session of the lost index starts a fresh anonymous session, never revives the old one', async () => {
    const { keys, call, index } = setup();
    const sid = (await call('/login/carol')).sid!;
    await lab.del(index('carol'));
    const w = await call('/put', sid, 'hello');
    expect(w.status).toBe(200);
    expect(w.sid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(w.sid).not.toBe(sid);
    // The unlisted session was deleted by the save script; the write landed in the new one.
    expect(await redis.exists(keys.key('sess', await hashOf(sid)))).toBe(0);
    expect((await call('/me', w.sid)).body).toEqual({ user: null, data: { note: 'hello' } });
    expect((await call('/me', sid)).body.user).toBeNull();
  });

  it('a new login after the loss is listed alone; logging out everywhere from it ends it and leaves the old ones out', async () => {
    const { store, call, index } = setup();
    const old = [(await call('/login/dave')).sid!, (await call('/login/dave')).sid!];
    await lab.del(index('dave'));
    const fresh = (await call('/login/dave')).sid!;
    const listed = await store.listSessions('dave');
    expect(listed.map((s) => s.handle)).toEqual([await hashOf(fresh)]);
    expect(await store.revokeAll('dave')).toBe(1);
    for (const sid of [...old, fresh]) expect((await call('/me', sid)).body.user).toBeNull();
  });
});

describe('flushed between two steps', () => {
  it('FLUSHALL after login: logged out (an anonymous, empty session), never an error', async () => {
    const { call } = setup();
    const sid = (await call('/login/erin')).sid!;
    await lab.flushall();
    await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
    expect(await call('/me', sid)).toMatchObject({ status: 200, body: { user: null, data: {} } });
  });
});
