/**
 * The consumer Worker (dist/index.js, bundled by `npm run build` from the installed package) run in
 * workerd by Miniflare against a real gateway, whose address the caller passes in the environment:
 * GATEWAY_URL, GATEWAY_TOKEN, and CLOSED_URL (a port where nothing listens).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { convertV4MiniflareOptions, Miniflare } from 'miniflare';

const need = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run this through \`npm run test:package\` in the repository root)`);
  return v;
};

let mf: Miniflare;
before(async () => {
  mf = new Miniflare(convertV4MiniflareOptions({
    modules: true,
    scriptPath: new URL('../dist/index.js', import.meta.url).pathname,
    compatibilityDate: '2026-11-01',
    bindings: { UPSTASH_REDIS_REST_URL: need('GATEWAY_URL'), UPSTASH_REDIS_REST_TOKEN: need('GATEWAY_TOKEN'), DOWN_REDIS_REST_URL: need('CLOSED_URL') },
  }));
  await mf.ready;
});
after(() => mf?.dispose());

const get = (path: string, init: RequestInit = {}) => mf.dispatchFetch(`http://consumer.test${path}`, { ...init, headers: { 'cf-connecting-ip': '203.0.113.9', ...init.headers } });

describe('edge-redis in a Worker of its own', () => {
  test('cache: MISS, then HIT with the same value', async () => {
    const first = await get('/greeting');
    assert.equal(first.status, 200);
    assert.equal(first.headers.get('x-cache'), 'MISS');
    assert.deepEqual(await first.json(), { hello: 'world' });
    const second = await get('/greeting');
    assert.equal(second.headers.get('x-cache'), 'HIT');
    assert.deepEqual(await second.json(), { hello: 'world' });
  });

  test('rate limit: 2 a minute, then 429 problem+json with Retry-After and the RateLimit fields', async () => {
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await get('/limited')).status);
    assert.deepEqual(statuses, [200, 200, 429]);
    const refused = await get('/limited');
    assert.equal(refused.headers.get('content-type'), 'application/problem+json');
    assert.match(refused.headers.get('retry-after') ?? '', /^\d+$/);
    assert.match(refused.headers.get('ratelimit') ?? '', /^"demo";r=0;t=\d+$/);
    assert.equal(((await refused.json()) as { code: string }).code, 'rate_limited');
  });

  test('session: the cookie carries the count from one request to the next', async () => {
    const first = await get('/visits', { method: 'POST' });
    assert.deepEqual(await first.json(), { visits: 1 });
    const sid = /^sid=([^;]+)/.exec(first.headers.getSetCookie().find((l) => l.startsWith('sid=')) ?? '')?.[1];
    assert.match(sid ?? '', /^[A-Za-z0-9_-]{43}$/);
    const second = await get('/visits', { method: 'POST', headers: { cookie: `sid=${sid}` } });
    assert.deepEqual(await second.json(), { visits: 2 });
  });

  test('lock: fences increase; `await using` releases the lock', async () => {
    const a = (await (await get('/locks/order-1', { method: 'POST' })).json()) as { fence: number };
    const b = (await (await get('/locks/order-1', { method: 'POST' })).json()) as { fence: number };
    assert.ok(b.fence > a.fence, `${b.fence} > ${a.fence}`);
  });

  test('Redis out of reach: 503 problem+json with Retry-After, no internals', async () => {
    const res = await get('/down');
    const text = await res.text();
    assert.equal(res.status, 503, text);
    assert.equal(res.headers.get('content-type'), 'application/problem+json');
    assert.equal(res.headers.get('retry-after'), '1');
    assert.equal((JSON.parse(text) as { code: string }).code, 'unavailable');
    assert.doesNotMatch(text, /upstash|evalsha|fetch|127\.0\.0\.1/i);
  });
});
