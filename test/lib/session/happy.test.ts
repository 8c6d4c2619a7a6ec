/**
 * Sessions, happy paths: laziness, round trips, expiry kept in step with the cookie, regenerate,
 * destroy, the per-user index and concurrent field-level writes. Real Redis through the gateway;
 * cookies are carried by hand between `app.request` calls.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { beforeAll, describe, expect, it } from 'vitest';
import { onEdgeRedisError, session, type SessionVariables } from 'edge-redis/hono';
import { keySchema } from 'edge-redis/keys';
import { createSessionStore, SCRIPTS, type SessionStoreOptions } from 'edge-redis/session';
import { countTrips } from '../../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const redis = new Redis({ url, token: env.UPSTASH_REDIS_REST_TOKEN });

const b64url = (b: ArrayBuffer) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const hashOf = async (id: string) => b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(id)));
const sha1 = async (s: string) => Array.from(new Uint8Array(await crypto.subtle.digest('SHA-1', new TextEncoder().encode(s))), (b) => b.toString(16).padStart(2, '0')).join('');

interface SetCookie { name: string; value: string; attrs: Record<string, string | true> }
function parseSetCookie(h: string): SetCookie {
  const [pair = '', ...rest] = h.split('; ');
  const eq = pair.indexOf('=');
  return { name: pair.slice(0, eq), value: pair.slice(eq + 1), attrs: Object.fromEntries(rest.map((a) => { const i = a.indexOf('='); return i < 0 ? [a.toLowerCase(), true] : [a.slice(0, i).toLowerCase(), a.slice(i + 1)]; })) };
}

function setup(opts: Partial<SessionStoreOptions> = {}) {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const app = new Hono<{ Variables: SessionVariables }>();
  app.onError(onEdgeRedisError);
  app.use(session({ redis, keys, ...opts }));
  app.get('/', (c) => c.json({ ok: true }));
  app.get('/read', async (c) => c.json(await c.get('session').all()));
  app.get('/handle', async (c) => c.json({ handle: (await c.get('session').handle()) ?? null, user: (await c.get('session').getUser()) ?? null }));
  // Writes without reading: a blind write needs no load.
  app.post('/put', async (c) => {
    for (const [k, v] of Object.entries(await c.req.json<Record<string, unknown>>())) c.get('session').set(k, v);
    return c.json({ ok: true });
  });
  app.post('/del/:k', (c) => (c.get('session').delete(c.req.param('k')), c.json({ ok: true })));
  app.post('/login/:uid', async (c) => {
    const s = c.get('session');
    s.set('flash', 'welcome'); // set before regenerate: must survive it
    await s.login(c.req.param('uid'));
    s.set('after', 1);
    return c.json(await s.all());
  });
  app.post('/logout', (c) => (c.get('session').destroy(), c.json({ ok: true })));
  app.post('/logout-known', async (c) => {
    await c.get('session').getUser(); // loaded, so the user index is cleaned in the same trip
    c.get('session').destroy();
    return c.json({ ok: true });
  });
  app.post('/touch', (c) => (c.get('session').touch(), c.json({ ok: true })));
  app.post('/fail4xx', (c) => {
    c.get('session').set('attempts', 1);
    throw new HTTPException(401, { message: 'Log in first.' });
  });
  app.post('/fail5xx', () => {
    throw new Error('boom');
  });
  app.post('/set-then-crash', (c) => {
    c.get('session').set('half', true);
    throw new Error('boom');
  });

  async function call(path: string, { cookie, method, body, ua }: { cookie?: string | undefined; method?: string; body?: unknown; ua?: string } = {}) {
    const headers: Record<string, string> = {};
    if (cookie !== undefined) headers['cookie'] = `__Host-sid=${cookie}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (ua !== undefined) headers['user-agent'] = ua;
    const init: RequestInit = { method: method ?? (['/', '/read', '/handle'].includes(path) ? 'GET' : 'POST'), headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const { result: res, count, commands } = await countTrips(url, async () => app.request(path, init));
    const text = await res.text();
    const cookies = res.headers.getSetCookie().map(parseSetCookie);
    return { res, status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : null, count, commands, cookies, text };
  }
  const sessKey = async (id: string) => keys.key('sess', await hashOf(id));
  return { keys, app, call, sessKey, store: createSessionStore({ redis, keys, ...(opts.idleMs ? { idleMs: opts.idleMs } : {}), ...(opts.absoluteMs ? { absoluteMs: opts.absoluteMs } : {}) }) };
}

/** Creates a session holding `data` and returns its id. */
async function create(call: ReturnType<typeof setup>['call'], data: Record<string, unknown> = { cart: [1] }, ua?: string) {
  const r = await call('/put', { body: data, ...(ua ? { ua } : {}) });
  expect(r.cookies, r.text).toHaveLength(1);
  return r.cookies[0]!.value;
}

beforeAll(async () => {
  // Warm the script cache so every count below is a warm EVALSHA.
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

describe('scripts', () => {
  it('pins each SHA: sha1(src) and SCRIPT LOAD agree with the exported constant', async () => {
    expect(Object.keys(SCRIPTS).sort()).toEqual(['load', 'revoke', 'save']);
    for (const [name, { src, sha }] of Object.entries(SCRIPTS)) {
      expect(await sha1(src), name).toBe(sha);
      expect(await redis.scriptLoad(src), name).toBe(sha);
    }
  });
});

describe('lazy', () => {
  it('a request without a cookie that ignores the session: 0 round trips, no Set-Cookie', async () => {
    const { call } = setup();
    const r = await call('/');
    expect(r).toMatchObject({ status: 200, count: 0, cookies: [] });
  });

  it('reading an empty session without a cookie: still 0 round trips and no cookie', async () => {
    const { call } = setup();
    const r = await call('/read');
    expect(r).toMatchObject({ status: 200, body: {}, count: 0, cookies: [] });
    expect((await call('/handle')).body).toEqual({ handle: null, user: null });
  });

  it('storing: one write round trip and exactly one Set-Cookie with the default attributes', async () => {
    const { call, sessKey } = setup();
    const r = await call('/put', { body: { cart: [1, 2], n: 1.5, s: '42' }, ua: 'TestAgent/1' });
    expect(r.status, r.text).toBe(200);
    expect(r.count).toBe(1);
    expect(r.commands).toEqual(['evalsha']);
    expect(r.cookies).toHaveLength(1);
    const c = r.cookies[0]!;
    expect(c.name).toBe('__Host-sid');
    expect(c.value).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(c.attrs).toEqual({ 'max-age': '1800', path: '/', httponly: true, secure: true, samesite: 'Lax' });

    const key = await sessKey(c.value);
    // Raw field values: JSON per field, meta fields prefixed with `_`.
    const flat = (await new Redis({ url, token: env.UPSTASH_REDIS_REST_TOKEN, automaticDeserialization: false }).hgetall(key)) as unknown as string[];
    const stored = Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]])));
    expect(stored).toMatchObject({ cart: '[1,2]', n: '1.5', s: '"42"', _ua: 'TestAgent/1' });
    expect(stored['_seen']).toBe(stored['_created']);
    expect(Number(stored['_created'])).toBeGreaterThan(1.7e12);

    // Types survive the round trip exactly (no number/string guessing).
    const back = await call('/read', { cookie: c.value });
    expect(back.body).toEqual({ cart: [1, 2], n: 1.5, s: '42' });
  });

  it('the next request with the cookie: load is one round trip; unchanged data writes nothing', async () => {
    const { call } = setup();
    const id = await create(call);
    const r = await call('/read', { cookie: id });
    expect(r).toMatchObject({ status: 200, body: { cart: [1] }, count: 1, commands: ['evalsha_ro'], cookies: [] });
    // Several reads in one request still load once.
    const h = await call('/handle', { cookie: id });
    expect(h).toMatchObject({ count: 1, cookies: [] });
    expect(h.body?.['handle']).toBe(await hashOf(id));
  });

  it('a blind write with the cookie is one round trip and refreshes the cookie; deletes are HDEL', async () => {
    const { call, sessKey } = setup();
    const id = await create(call, { a: 1, b: 2 });
    const r = await call('/put', { cookie: id, body: { c: 3 } });
    expect(r).toMatchObject({ count: 1, commands: ['evalsha'] });
    expect(r.cookies.map((c) => [c.name, c.value, c.attrs['max-age']])).toEqual([['__Host-sid', id, '1800']]);
    const d = await call('/del/a', { cookie: id });
    expect(d.count).toBe(1);
    expect(await redis.hkeys(await sessKey(id))).toEqual(expect.arrayContaining(['b', 'c']));
    expect(await redis.hexists(await sessKey(id), 'a')).toBe(0);
    expect((await call('/read', { cookie: id })).body).toEqual({ b: 2, c: 3 });
  });
});

describe('expiry', () => {
  it('Redis TTL and cookie Max-Age are set together', async () => {
    const { call, sessKey } = setup({ idleMs: 600_000 });
    const r = await call('/put', { body: { x: 1 } });
    const maxAge = Number(r.cookies[0]!.attrs['max-age']);
    expect(maxAge).toBe(600);
    const pttl = await redis.pttl(await sessKey(r.cookies[0]!.value));
    // The cookie never outlives the session: Max-Age is the TTL just set, rounded down.
    expect(pttl).toBeLessThanOrEqual(600_000);
    expect(pttl).toBeGreaterThan(maxAge * 1000 - 5_000);
  });

  it('touches an unchanged session only once the extension gains the touch interval', async () => {
    const { call, sessKey } = setup({ idleMs: 60_000, touchIntervalMs: 10_000 });
    const id = await create(call);
    const key = await sessKey(id);
    const seen0 = Number(await redis.hget(key, '_seen'));

    // 5 s "elapsed" (TTL 55 s): a touch would gain less than 10 s, so none.
    await redis.pexpire(key, 55_000);
    const quiet = await call('/read', { cookie: id });
    expect(quiet).toMatchObject({ count: 1, commands: ['evalsha_ro'], cookies: [] });
    expect(await redis.pttl(key)).toBeLessThanOrEqual(55_000);

    // 15 s "elapsed": touch due — the expiry and the cookie are renewed in one extra round trip.
    await redis.pexpire(key, 45_000);
    const touched = await call('/read', { cookie: id });
    expect(touched).toMatchObject({ count: 2, commands: ['evalsha_ro', 'evalsha'] });
    expect(touched.cookies.map((c) => [c.value, c.attrs['max-age']])).toEqual([[id, '60']]);
    expect(await redis.pttl(key)).toBeGreaterThan(55_000);
    expect(Number(await redis.hget(key, '_seen'))).toBeGreaterThanOrEqual(seen0);

    // Just touched: the next read writes nothing again.
    expect(await call('/read', { cookie: id })).toMatchObject({ count: 1, cookies: [] });
  });

  it('touch() forces a renewal without a load: one write round trip', async () => {
    const { call, sessKey } = setup({ idleMs: 60_000 });
    const id = await create(call);
    await redis.pexpire(await sessKey(id), 30_000);
    const r = await call('/touch', { cookie: id });
    expect(r).toMatchObject({ count: 1, commands: ['evalsha'] });
    expect(r.cookies[0]?.attrs['max-age']).toBe('60');
    expect(await redis.pttl(await sessKey(id))).toBeGreaterThan(55_000);
  });

  it('the absolute lifetime caps TTL and Max-Age, and touching stops near the cap', async () => {
    const { call, sessKey } = setup({ idleMs: 60_000, absoluteMs: 120_000, touchIntervalMs: 10_000 });
    const id = await create(call);
    const key = await sessKey(id);
    // Pretend the session was created 100 s ago: 20 s of its lifetime remain.
    await redis.hset(key, { _created: Number(await redis.hget(key, '_created')) - 100_000 });
    const w = await call('/put', { cookie: id, body: { y: 2 } });
    const maxAge = Number(w.cookies[0]!.attrs['max-age']);
    expect(maxAge).toBeLessThanOrEqual(20);
    expect(maxAge).toBeGreaterThan(10);
    const pttl = await redis.pttl(key);
    expect(pttl).toBeLessThanOrEqual(20_000);
    expect(pttl).toBeGreaterThan(maxAge * 1000 - 5_000);
    // The TTL already sits at the cap: extending gains nothing, so a read does not touch.
    expect(await call('/read', { cookie: id })).toMatchObject({ count: 1, cookies: [] });
  });

  it('past its absolute lifetime a session is gone: a write starts a fresh one', async () => {
    const { call, sessKey } = setup({ idleMs: 60_000, absoluteMs: 120_000 });
    const id = await create(call, { old: true });
    const key = await sessKey(id);
    await redis.hset(key, { _created: Number(await redis.hget(key, '_created')) - 130_000 });
    const r = await call('/put', { cookie: id, body: { fresh: 1 } });
    expect(r.status).toBe(200);
    expect(r.count).toBe(2); // the refused update, then the create
    const fresh = r.cookies[0]!.value;
    expect(fresh).not.toBe(id);
    expect(await redis.exists(key)).toBe(0);
    expect((await call('/read', { cookie: fresh })).body).toEqual({ fresh: 1 });
  });
});

describe('regenerate / destroy', () => {
  it('login regenerates: new id, old key gone, data kept (including what was set in the same request)', async () => {
    const { call, sessKey, keys } = setup();
    const id = await create(call, { cart: ['sku-1'] });
    const r = await call('/login/u1', { cookie: id });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({ cart: ['sku-1'], flash: 'welcome', after: 1 });
    // One load, then the delete of the old key, the new session and the user index in one trip.
    expect(r.count).toBe(2);
    expect(r.commands[0]).toBe('evalsha_ro');
    expect(r.cookies).toHaveLength(1);
    const next = r.cookies[0]!.value;
    expect(next).not.toBe(id);
    expect(await redis.exists(await sessKey(id))).toBe(0);
    expect((await call('/read', { cookie: next })).body).toEqual({ cart: ['sku-1'], flash: 'welcome', after: 1 });
    expect((await call('/handle', { cookie: next })).body).toEqual({ handle: await hashOf(next), user: 'u1' });
    expect(await redis.zrange(keys.key('user-sess', 'u1'), 0, -1)).toEqual([await hashOf(next)]);
    // The old id is now an unknown cookie: an anonymous, empty session.
    expect((await call('/read', { cookie: id })).body).toEqual({});
  });

  it('login without a prior session creates one in a single round trip', async () => {
    const { call } = setup();
    const r = await call('/login/u2');
    expect(r).toMatchObject({ status: 200, count: 1, body: { flash: 'welcome', after: 1 } });
    expect(r.cookies).toHaveLength(1);
  });

  it('destroy deletes the session and clears the cookie (Max-Age=0), in one round trip', async () => {
    const { call, sessKey } = setup();
    const id = await create(call);
    const r = await call('/logout', { cookie: id });
    expect(r).toMatchObject({ status: 200, count: 1, commands: ['del'] });
    expect(r.cookies).toEqual([{ name: '__Host-sid', value: '', attrs: { 'max-age': '0', path: '/', httponly: true, secure: true, samesite: 'Lax' } }]);
    expect(await redis.exists(await sessKey(id))).toBe(0);
  });

  it('a deliberate 4xx still saves; a crash (5xx) keeps the stored state', async () => {
    const { call, sessKey } = setup();
    const a = await call('/fail4xx');
    expect(a.status).toBe(401);
    expect(a.res.headers.get('content-type')).toBe('application/problem+json');
    expect(a.cookies).toHaveLength(1);
    expect((await call('/read', { cookie: a.cookies[0]!.value })).body).toEqual({ attempts: 1 });

    const id = await create(call, { keep: 1 });
    const b = await call('/set-then-crash', { cookie: id });
    expect(b).toMatchObject({ status: 500, count: 0, cookies: [] });
    expect(await redis.hexists(await sessKey(id), 'half')).toBe(0);
  });
});

describe('per-user index', () => {
  it('lists, revokes one and revokes all of a user\'s sessions across three sessions', async () => {
    const { call, store, keys } = setup();
    const ids: string[] = [];
    for (const ua of ['Phone', 'Laptop', 'Tablet']) {
      const r = await call('/login/alice', { ua });
      ids.push(r.cookies[0]!.value);
    }
    const bob = (await call('/login/bob')).cookies[0]!.value;
    const handles = await Promise.all(ids.map(hashOf));

    const listed = await countTrips(url, () => store.listSessions('alice'));
    expect(listed.count).toBe(2); // the index, then every session in one pipeline
    expect(listed.result.map((s) => s.handle).sort()).toEqual([...handles].sort());
    expect(listed.result.map((s) => s.userAgent).sort()).toEqual(['Laptop', 'Phone', 'Tablet']);
    for (const s of listed.result) {
      expect(s.createdAt).toBeGreaterThan(1.7e12);
      expect(s.lastSeenAt).toBeGreaterThanOrEqual(s.createdAt);
      expect(s.expiresAt).toBeGreaterThan(s.lastSeenAt);
    }
    expect(JSON.stringify(listed.result)).not.toContain(ids[0]);

    // Revoke one: a single round trip; that cookie now opens an empty session, the others still work.
    const one = await countTrips(url, () => store.revokeSession('alice', handles[1]!));
    expect(one).toMatchObject({ result: true, count: 1 });
    expect((await call('/handle', { cookie: ids[1]! })).body).toEqual({ handle: null, user: null });
    expect((await call('/handle', { cookie: ids[0]! })).body?.['user']).toBe('alice');
    // Not alice's session: refused, and bob stays logged in.
    expect(await store.revokeSession('alice', await hashOf(bob))).toBe(false);
    expect((await call('/handle', { cookie: bob })).body?.['user']).toBe('bob');
    expect(await store.revokeSession('alice', 'not-a-handle')).toBe(false);

    // Log out everywhere except the current session: two round trips.
    const all = await countTrips(url, () => store.revokeAll('alice', { except: handles[0]! }));
    expect(all).toMatchObject({ result: 1, count: 2 });
    expect((await call('/handle', { cookie: ids[2]! })).body?.['user']).toBe(null);
    expect((await call('/handle', { cookie: ids[0]! })).body?.['user']).toBe('alice');
    expect(await redis.zrange(keys.key('user-sess', 'alice'), 0, -1)).toEqual([handles[0]]);

    expect(await store.revokeAll('alice')).toBe(1);
    expect(await store.listSessions('alice')).toEqual([]);
    expect((await call('/handle', { cookie: bob })).body?.['user']).toBe('bob');
  });

  it('listing prunes entries of sessions that ended elsewhere (destroyed, expired)', async () => {
    const { call, store, keys, sessKey } = setup();
    const a = (await call('/login/carol')).cookies[0]!.value;
    const b = (await call('/login/carol')).cookies[0]!.value;
    const c = (await call('/login/carol')).cookies[0]!.value;
    // Logout of a loaded session cleans the index in the same single trip.
    const out = await call('/logout-known', { cookie: a });
    expect(out.count).toBe(2);
    expect(out.commands.slice(1).sort()).toEqual(['del', 'zrem']);
    // A blind logout and an idle expiry leave dead entries that the next listing removes.
    await call('/logout', { cookie: b });
    await redis.del(await sessKey(c));
    expect(await redis.zcard(keys.key('user-sess', 'carol'))).toBe(2);
    const listed = await countTrips(url, () => store.listSessions('carol'));
    expect(listed).toMatchObject({ result: [], count: 3 });
    expect(await redis.exists(keys.key('user-sess', 'carol'))).toBe(0);
  });

  it('the index expires with its newest session and has its entries scored by deadline', async () => {
    const { call, keys } = setup({ absoluteMs: 3_600_000 });
    const id = (await call('/login/dave')).cookies[0]!.value;
    const idx = keys.key('user-sess', 'dave');
    const score = Number(await redis.zscore(idx, await hashOf(id)));
    expect(score).toBeGreaterThan(Date.now() + 3_600_000);
    expect(await redis.pttl(idx)).toBeGreaterThan(3_600_000);
  });
});

describe('concurrency', () => {
  it('two concurrent requests of one session setting different fields both persist', async () => {
    const { call, sessKey } = setup();
    const id = await create(call, { base: 0 });
    const [a, b] = await Promise.all([call('/put', { cookie: id, body: { a: 1 } }), call('/put', { cookie: id, body: { b: 2 } })]);
    expect([a.status, b.status]).toEqual([200, 200]);
    expect((await call('/read', { cookie: id })).body).toEqual({ base: 0, a: 1, b: 2 });
    expect((await redis.hkeys(await sessKey(id))).sort()).toEqual(['_created', '_seen', 'a', 'b', 'base']);
  });
});
