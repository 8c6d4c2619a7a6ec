/**
 * `session.save()` called by the handler (src/functions/checkout.ts and auth.ts do, to put the save
 * in the same round trip as their own writes, and to decide themselves what a failed save means):
 * the middleware's save after the handler then writes nothing and sends no second cookie, and a
 * failed explicit save (a SessionError) is the handler's to handle, never a 503 added by the middleware.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { Hono } from 'hono';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { onEdgeRedisError, session, type SessionVariables } from 'edge-redis/hono';
import { keySchema } from 'edge-redis/keys';
import { SCRIPTS } from 'edge-redis/session';
import { countTrips } from '../../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;

function app(redisUrl = url) {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const a = new Hono<{ Variables: SessionVariables }>();
  a.onError(onEdgeRedisError);
  a.use(session({ redis: new Redis({ url: redisUrl, token }), keys, cookie: { name: 'sid', secure: false } }));
  a.post('/put', (c) => (c.get('session').set('cart', { 1: 2 }), c.json({ ok: true })));
  a.post('/login', async (c) => {
    const s = c.get('session');
    await s.login('u1');
    await s.save();
    return c.json({ ok: true });
  });
  a.post('/empty-and-save', async (c) => {
    const s = c.get('session');
    s.delete('cart');
    const saved = await s.save().then(() => 'saved', (e: unknown) => (e instanceof Error ? e.name : 'failed'));
    return c.json({ saved }, 201);
  });
  return a;
}

beforeAll(async () => {
  // Warm EVALSHA, so the round-trip count below is exact.
  const redis = new Redis({ url, token });
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

const sids = (res: Response) => res.headers.getSetCookie().filter((l) => l.startsWith('sid='));

describe('an explicit save', () => {
  it('at login (regenerate + save in the handler): one write trip, ONE sid cookie (the new one), the middleware adds nothing', async () => {
    const a = app();
    const first = await a.request('/put', { method: 'POST' });
    const old = /^sid=([^;]+)/.exec(sids(first)[0]!)![1]!;
    const { result: res, trips } = await countTrips(url, async () => a.request('/login', { method: 'POST', headers: { cookie: `sid=${old}` } }));
    expect(res.status).toBe(200);
    expect(trips, JSON.stringify(trips.map((t) => t.commands))).toHaveLength(2); // the load, then the one save
    const lines = sids(res);
    expect(lines, lines.join('\n')).toHaveLength(1);
    expect(lines[0]).not.toContain(old);
    expect(lines[0]).toMatch(/^sid=[A-Za-z0-9_-]{43}; Max-Age=\d+/);
  });

  it('that fails (Redis down) is the handler\'s answer to give: its 201 stands, no 503, no cookie', async () => {
    const up = app();
    const sid = /^sid=([^;]+)/.exec(sids(await up.request('/put', { method: 'POST' }))[0]!)![1]!;
    // The same cookie against a Redis that is down: the load fails inside save(), which the handler catches.
    const down = app(inject('downGatewayUrl'));
    const res = await down.request('/empty-and-save', { method: 'POST', headers: { cookie: `sid=${sid}` } });
    expect(res.status).toBe(201);
    expect(await res.json()).toEqual({ saved: 'SessionError' });
    expect(sids(res)).toEqual([]);
  });
});
