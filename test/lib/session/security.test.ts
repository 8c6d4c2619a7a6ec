/**
 * Sessions, security and failure policy: tampered and unknown cookies, ids never stored in clear,
 * meta fields out of the app's reach, no resurrection of revoked sessions, cookie attribute rules,
 * and Redis down → 503 problem+json (fail closed).
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { EdgeRedisError, SessionError } from 'edge-redis';
import { edgeRedisProblem, onEdgeRedisError, session, type SessionCookieOptions, type SessionVariables } from 'edge-redis/hono';
import { keySchema } from 'edge-redis/keys';
import { createSessionStore, SCRIPTS, type SessionRedis, type SessionStoreOptions } from 'edge-redis/session';
import { countTrips } from '../../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });

const b64url = (b: ArrayBuffer) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const hashOf = async (id: string) => b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(id)));
const randomId = () => b64url(crypto.getRandomValues(new Uint8Array(32)).buffer as ArrayBuffer);

function setup(opts: Partial<SessionStoreOptions> & { cookie?: SessionCookieOptions } = {}, cookieName = '__Host-sid') {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const app = new Hono<{ Variables: SessionVariables }>();
  app.onError(onEdgeRedisError);
  app.use(session({ redis, keys, ...opts }));
  app.get('/', (c) => c.json({ ok: true }));
  app.get('/read', async (c) => c.json(await c.get('session').all()));
  app.get('/user', async (c) => c.json({ user: (await c.get('session').getUser()) ?? null }));
  app.post('/put', async (c) => {
    for (const [k, v] of Object.entries(await c.req.json<Record<string, unknown>>())) c.get('session').set(k, v);
    return c.json({ ok: true });
  });
  app.post('/login/:uid', async (c) => (await c.get('session').login(c.req.param('uid')), c.json({ ok: true })));
  app.post('/logout', (c) => (c.get('session').destroy(), c.json({ ok: true })));
  app.post('/forge', (c) => {
    try {
      c.get('session').set('_uid', 'admin');
    } catch (e) {
      throw new HTTPException(400, { message: e instanceof TypeError ? 'reserved key' : 'other', cause: e });
    }
    return c.json({ forged: true });
  });
  // Loads, then the session disappears (a concurrent revoke), then the handler writes.
  app.post('/race', async (c) => {
    const s = c.get('session');
    await s.getUser();
    await redis.del(keys.key('sess', (await s.handle())!));
    s.set('late', 1);
    return c.json({ ok: true });
  });

  async function call(path: string, { cookie, method }: { cookie?: string; method?: string } = {}, body?: unknown) {
    const headers: Record<string, string> = {};
    if (cookie !== undefined) headers['cookie'] = `${cookieName}=${cookie}`;
    const init: RequestInit = { method: method ?? (['/', '/read', '/user'].includes(path) ? 'GET' : 'POST'), headers };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const { result: res, count, commands } = await countTrips(url, async () => app.request(path, init));
    const text = await res.text();
    return { res, status: res.status, text, body: text ? (JSON.parse(text) as Record<string, unknown>) : null, count, commands, setCookies: res.headers.getSetCookie() };
  }
  const idOf = (setCookie: string | undefined) => /^[^=]+=([^;]*)/.exec(setCookie ?? '')?.[1] ?? '';
  return { keys, call, idOf };
}

beforeAll(async () => {
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

describe('tampered, unknown and expired cookies', () => {
  it.each([
    ['garbage', '%%%not-a-cookie%%', 0],
    ['wrong length', 'A'.repeat(42), 0],
    ['too long', 'A'.repeat(44), 0],
    ['bad alphabet', '+'.repeat(43), 0],
    ['valid-looking but unknown', randomId(), 1],
  ])('%s: a fresh anonymous session, 200, no error, no Set-Cookie', async (_name, cookie, trips) => {
    const { call } = setup();
    const r = await call('/read', { cookie });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({});
    // Malformed ids never reach Redis; a well-formed unknown one costs its single load.
    expect(r.count).toBe(trips);
    // Not cleared: clearing could race a concurrent login's fresh cookie. The next stored value replaces it.
    expect(r.setCookies).toEqual([]);
  });

  it('writing with an unknown cookie mints a new id and never stores under the attacker\'s id', async () => {
    const { call, keys, idOf } = setup();
    const planted = randomId();
    const r = await call('/put', { cookie: planted }, { x: 1 });
    expect(r.status).toBe(200);
    expect(r.count).toBe(2); // the refused update of the unknown id, then the create
    const id = idOf(r.setCookies[0]);
    expect(id).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(id).not.toBe(planted);
    expect(await redis.exists(keys.key('sess', await hashOf(planted)))).toBe(0);
  });

  it('destroy with a garbage cookie clears it', async () => {
    const { call } = setup();
    const r = await call('/logout', { cookie: 'garbage' });
    expect(r).toMatchObject({ status: 200, count: 0 });
    expect(r.setCookies).toEqual(['__Host-sid=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Lax']);
  });
});

describe('at rest', () => {
  it('stores the session under SHA-256(id): the raw id appears in no key and no value', async () => {
    const { call, keys, idOf } = setup();
    const r = await call('/login/erin');
    const id = idOf(r.setCookies[0]);
    const found: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, { match: `${keys.prefix}:*`, count: 1000 });
      cursor = String(next);
      found.push(...batch);
    } while (cursor !== '0');
    expect(found.sort()).toEqual([keys.key('sess', await hashOf(id)), keys.key('user-sess', 'erin')].sort());
    for (const k of found) expect(k).not.toContain(id);
    const dump = JSON.stringify([await redis.hgetall(keys.key('sess', await hashOf(id))), await redis.zrange(keys.key('user-sess', 'erin'), 0, -1)]);
    expect(dump).not.toContain(id);
  });

  it('meta fields are out of the app\'s reach: set("_uid") throws and stores nothing', async () => {
    const { call } = setup();
    const r = await call('/forge');
    expect(r.status).toBe(400);
    expect(r.body?.['detail']).toBe('reserved key');
    expect(r.setCookies).toEqual([]);
  });

  it('a session revoked between load and save is not resurrected; the write starts a clean anonymous session', async () => {
    const { call, keys, idOf } = setup();
    const id = idOf((await call('/login/frank')).setCookies[0]);
    const r = await call('/race', { cookie: id });
    expect(r.status, r.text).toBe(200);
    const fresh = idOf(r.setCookies[0]);
    expect(fresh).not.toBe(id);
    expect(await redis.exists(keys.key('sess', await hashOf(id)))).toBe(0);
    // The new session holds the late write only: not the user of the revoked one.
    expect((await call('/read', { cookie: fresh })).body).toEqual({ late: 1 });
    expect((await call('/user', { cookie: fresh })).body).toEqual({ user: null });
  });
});

describe('cookie attributes', () => {
  const keys = keySchema({ app: 'x', env: 'y' });
  it.each<[string, SessionCookieOptions]>([
    ['not Secure', { secure: false }],
    ['a Path', { path: '/app' }],
    ['a Domain', { domain: 'example.com' }],
  ])('a __Host- cookie with %s is refused at setup', (_n, cookie) => {
    expect(() => session({ redis, keys, cookie })).toThrow(TypeError);
  });

  it('SameSite=None without Secure and invalid names are refused; bad lifetimes too', () => {
    expect(() => session({ redis, keys, cookie: { name: 'sid', secure: false, sameSite: 'None' } })).toThrow(TypeError);
    expect(() => session({ redis, keys, cookie: { name: 'a b' } })).toThrow(TypeError);
    expect(() => session({ redis, keys, cookie: { name: '__Secure-sid', secure: false } })).toThrow(TypeError);
    expect(() => session({ redis, keys, absoluteMs: 401 * 86_400_000 })).toThrow(RangeError);
    expect(() => session({ redis, keys, idleMs: 1.5 })).toThrow(RangeError);
    expect(() => session({ redis, keys, touchIntervalMs: -1 })).toThrow(RangeError);
  });

  it('local http development: a plain name without Secure, other attributes configurable', async () => {
    const { call } = setup({ cookie: { name: 'sid', secure: false, sameSite: 'Strict', path: '/app' } }, 'sid');
    const r = await call('/put', {}, { a: 1 });
    expect(r.setCookies).toHaveLength(1);
    expect(r.setCookies[0]).toMatch(/^sid=[A-Za-z0-9_-]{43}; Max-Age=1800; Path=\/app; HttpOnly; SameSite=Strict$/);
  });
});

describe('script cache lost', () => {
  it('EVALSHA answering NOSCRIPT falls back to EVAL, once per call, and the session still works', async () => {
    const noscript = async () => {
      throw new Error('Command failed: NOSCRIPT No matching script. Please use EVAL.');
    };
    // A real client with EVALSHA overridden: flushing the shared script cache would disturb other files' counts.
    const flaky: SessionRedis = { eval: redis.eval, evalRo: redis.evalRo, evalsha: noscript, evalshaRo: noscript, del: redis.del, zadd: redis.zadd, zrem: redis.zrem, zrange: redis.zrange, zremrangebyscore: redis.zremrangebyscore, pexpire: redis.pexpire };
    const { call, idOf } = setup({ redis: flaky });
    const w = await call('/put', {}, { a: 1 });
    expect(w).toMatchObject({ status: 200, count: 1, commands: ['eval'] });
    const r = await call('/read', { cookie: idOf(w.setCookies[0]) });
    expect(r).toMatchObject({ status: 200, body: { a: 1 }, count: 1, commands: ['eval_ro'] });
  });
});

describe('failure policy: fail closed', () => {
  const down = () => new Redis({ url: inject('downGatewayUrl'), token: inject('gatewayToken') });

  function downApp() {
    const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
    const app = new Hono<{ Variables: SessionVariables }>();
    app.onError(onEdgeRedisError);
    app.use(session({ store: () => createSessionStore({ redis: down(), keys }) }));
    app.get('/', (c) => c.json({ ok: true }));
    app.get('/read', async (c) => c.json(await c.get('session').all()));
    app.post('/put', (c) => (c.get('session').set('a', 1), c.json({ ok: true })));
    return app;
  }

  async function expectUnavailable(res: Response) {
    const text = await res.text();
    expect(res.status, text).toBe(503);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.headers.get('retry-after')).toBe('5');
    expect(res.headers.getSetCookie()).toEqual([]);
    const body = JSON.parse(text) as Record<string, unknown>;
    expect(body).toMatchObject({ status: 503, code: 'unavailable', detail: 'Sessions are unavailable right now; try again shortly.' });
    // The Redis or gateway message stays in the log.
    expect(text).not.toMatch(/upstash|gateway|ECONN|Command failed|is down/i);
  }

  it('loading a session while Redis is down answers 503 problem+json', async () => {
    await expectUnavailable(await downApp().request('/read', { headers: { cookie: `__Host-sid=${randomId()}` } }));
  });

  it('saving while Redis is down answers 503 problem+json, never a success that was not stored', async () => {
    await expectUnavailable(await downApp().request('/put', { method: 'POST' }));
  });

  it('requests that need no Redis still work: no cookie, or the session untouched', async () => {
    const app = downApp();
    expect((await app.request('/')).status).toBe(200);
    expect((await app.request('/', { headers: { cookie: `__Host-sid=${randomId()}` } })).status).toBe(200);
    expect(await (await app.request('/read')).json()).toEqual({});
  });

  it('the per-user operations reject with SessionError unavailable (503 through edge-redis/hono)', async () => {
    const store = createSessionStore({ redis: down(), keys: keySchema({ app: 'x', env: 'y' }) });
    for (const p of [store.listSessions('u'), store.revokeAll('u'), store.revokeSession('u', randomId())]) {
      const err: unknown = await p.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SessionError);
      expect(err).toBeInstanceOf(EdgeRedisError);
      expect(err).toMatchObject({ code: 'unavailable', pattern: 'session' });
      expect((err as SessionError).cause).toBeDefined();
      expect(edgeRedisProblem(err as SessionError)).toMatchObject({ code: 'unavailable', headers: { 'retry-after': '5' } });
    }
  });
});
