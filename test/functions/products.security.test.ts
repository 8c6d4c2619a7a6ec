/**
 * The product write routes' guards: the admin bearer token (401 without or with a wrong one, checked
 * before the body, compared in constant time, nothing written or published on refusal), CSRF for
 * cookie-carrying writes, SQL kept out of the queries, and errors without stacks or secrets.
 */
import { Redis } from '@upstash/redis/cloudflare';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { countTrips } from '../support/round-trips.ts';
import { ADMIN, call, createProduct, expectProblem, fileEnv, type ProductBody } from './products.support.ts';

const e = fileEnv();
const url = env.UPSTASH_REDIS_REST_URL;
const redis = new Redis({ url, token: env.UPSTASH_REDIS_REST_TOKEN });
const good = { name: 'Guarded', category: 'toys', price: 2, stock: 2 };

afterEach(() => {
  vi.restoreAllMocks();
});

const count = async () => (await env.DB.prepare('SELECT count(*) AS n FROM products').first<number>('n'))!;

describe('admin token', () => {
  const wrong: [string, Record<string, string>][] = [
    ['no Authorization', {}],
    ['a wrong token', { authorization: 'Bearer not-the-token' }],
    ['the token with a suffix', { authorization: `${ADMIN.authorization}x` }],
    ['a prefix of the token', { authorization: ADMIN.authorization.slice(0, -1) }],
    ['another scheme', { authorization: `Basic ${btoa(`admin:${env.ADMIN_TOKEN}`)}` }],
    ['the bare token', { authorization: env.ADMIN_TOKEN }],
    ['an empty bearer', { authorization: 'Bearer ' }],
  ];

  it.each(wrong)('%s: POST, PATCH and DELETE answer 401 and change nothing', async (_, headers) => {
    const p = await createProduct(e);
    const before = await count();
    const { trips } = await countTrips(url, async () => {
      const answers = [
        await call('/products', { env: e, method: 'POST', headers, body: good }),
        await call(`/products/${p.id}`, { env: e, method: 'PATCH', headers, body: { stock: 0 } }),
        await call(`/products/${p.id}`, { env: e, method: 'DELETE', headers }),
      ];
      for (const r of answers) {
        expectProblem(r, 401, 'unauthorized');
        expect(r.res.headers.get('www-authenticate')).toBe('Bearer realm="admin"');
      }
    });
    expect(await count()).toBe(before);
    expect((await call(`/products/${p.id}`, { env: e })).body).toEqual(p);
    // Only the rate-limit checks reached Redis: no invalidation, no event.
    expect(trips.flatMap((t) => t.commands)).not.toContain('publish');
  });

  it('is checked before the body: a bad body without the token is 401, not a 400 describing the schema', async () => {
    const r = await call('/products', { env: e, method: 'POST', body: { name: '' } });
    const body = expectProblem(r, 401, 'unauthorized');
    expect(body['errors']).toBeUndefined();
  });

  it('is compared in constant time: both sides hashed to 32 bytes, then crypto.subtle.timingSafeEqual', async () => {
    const spy = vi.spyOn(crypto.subtle, 'timingSafeEqual');
    expectProblem(await call('/products', { env: e, method: 'POST', headers: { authorization: 'Bearer short' }, body: good }), 401, 'unauthorized');
    expect((await call('/products', { env: e, method: 'POST', headers: ADMIN, body: good })).status).toBe(201);
    expect(spy).toHaveBeenCalledTimes(2);
    for (const [a, b] of spy.mock.calls) {
      expect((a as ArrayBuffer).byteLength).toBe(32);
      expect((b as ArrayBuffer).byteLength).toBe(32);
    }
    expect(spy.mock.results.map((r) => r.value)).toEqual([false, true]);
  });

  it('an unset ADMIN_TOKEN refuses everyone (and says so in the log)', async () => {
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const open = { ...e, ADMIN_TOKEN: '' } as Env;
    for (const authorization of ['Bearer ', 'Bearer x', ADMIN.authorization]) {
      expectProblem(await call('/products', { env: open, method: 'POST', headers: { authorization }, body: good }), 401, 'unauthorized');
    }
    expect(error.mock.calls.flat().join(' ')).toContain('ADMIN_TOKEN is not set');
  });
});

describe('CSRF', () => {
  const cookie = 'sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

  it('a cookie-carrying POST from another origin is 403, even with the admin token; from this origin it passes', async () => {
    const before = await count();
    const foreign = await call('/products', { env: e, method: 'POST', headers: { ...ADMIN, cookie, origin: 'https://evil.example' }, body: good });
    expectProblem(foreign, 403, 'forbidden');
    const crossSite = await call('/products', { env: e, method: 'POST', headers: { ...ADMIN, cookie, 'sec-fetch-site': 'cross-site' }, body: good });
    expectProblem(crossSite, 403, 'forbidden');
    expect(await count()).toBe(before);
    const same = await call('/products', { env: e, method: 'POST', headers: { ...ADMIN, cookie, origin: 'http://shop.test' }, body: good });
    expect(same.status, same.text).toBe(201);
  });

  it('PATCH and DELETE are guarded the same way', async () => {
    const p = await createProduct(e);
    const h = { ...ADMIN, cookie, origin: 'https://evil.example' };
    expectProblem(await call(`/products/${p.id}`, { env: e, method: 'PATCH', headers: h, body: { stock: 0 } }), 403, 'forbidden');
    expectProblem(await call(`/products/${p.id}`, { env: e, method: 'DELETE', headers: h }), 403, 'forbidden');
    expect((await call(`/products/${p.id}`, { env: e })).body).toEqual(p);
  });
});

describe('injection and leaks', () => {
  it('SQL in a name is stored as text; in an id or query it is a 400', async () => {
    const name = "x'); DROP TABLE products; --";
    const p: ProductBody = await createProduct(e, { name });
    expect((await call(`/products/${p.id}`, { env: e })).body).toMatchObject({ name });
    expectProblem(await call(`/products/1%20OR%201=1`, { env: e }), 400, 'bad_request');
    expectProblem(await call(`/products?category=toys'%20--`, { env: e }), 400, 'bad_request');
    expect(await count()).toBeGreaterThan(1000);
  });

  it('cache keys cannot be steered: a category is one of six, an id digits only', async () => {
    const r = await call('/products?category=*', { env: e });
    expectProblem(r, 400, 'bad_request');
    expect(await redis.exists(`${e.REDIS_KEY_APP}:${e.APP_ENV}:cache:{products:*:1:20}`)).toBe(0);
  });

  it('a Redis outage reaches the client as a problem with no stack, URL or token, and the log has no token', async () => {
    const logs: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void logs.push(a.join(' ')));
    vi.spyOn(console, 'warn').mockImplementation((...a: unknown[]) => void logs.push(a.join(' ')));
    const down = { ...e, UPSTASH_REDIS_REST_URL: 'http://127.0.0.1:1' } as Env;
    const r = await call('/products', { env: down, method: 'POST', headers: ADMIN, body: good });
    expectProblem(r, 503, 'unavailable');
    expect(r.text).not.toContain('127.0.0.1');
    expect(logs.join('\n')).not.toContain(env.UPSTASH_REDIS_REST_TOKEN);
    expect(logs.join('\n')).not.toContain(env.ADMIN_TOKEN);
  });
});
