/**
 * Redis going away and coming back, for real: a private redis-server process is stopped and
 * restarted under a private gateway. While it is down every request answers 502/503 JSON at once
 * (never a hang, never a 500 with a stack); afterwards the gateway recovers without help.
 * The tests get 30 s: recovery is polled for up to ~10 s, beyond vitest's default 5 s.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { client, errorOf, metric, openSse, post, prefix, privateGateway, raw, scrape, show, type PrivateGateway, type RawResponse, type Target } from './helpers.ts';

/** `soft`: a failure is recorded but the test goes on, so one bad route does not hide the others. */
function expectUnavailable(res: RawResponse, soft = false): void {
  const check = soft ? expect.soft : expect;
  check([502, 503], show(res)).toContain(res.status);
  check(res.headers.get('content-type') ?? '', show(res)).toMatch(/^application\/json/);
  check(errorOf(res), show(res)).toBeTypeOf('string');
  check(res.text, show(res)).not.toMatch(/\n\s+at |ECONNREFUSED|127\.0\.0\.1/);
}

/** Polls /healthz until it answers 200, for at most ~10 s; returns the last answer. */
async function healthyWithin10s(gw: Target): Promise<RawResponse> {
  let last = await raw(gw, '/healthz', { token: null });
  for (let i = 0; i < 100 && last.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    last = await raw(gw, '/healthz', { token: null });
  }
  return last;
}

describe('Redis stops and restarts under a running gateway', () => {
  let redis: RedisProcess;
  let gw: PrivateGateway;
  beforeAll(async () => {
    redis = await startRedisServer();
    gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_TIMEOUT_MS: '5000' });
  });
  afterAll(async () => {
    await gw.close();
    await redis.stop();
  });

  test('works, answers 502/503 JSON while Redis is down, then recovers by itself', async () => {
    const k = `${prefix()}k`;
    const c = client(gw, { autoPipelining: false });
    expect(await c.set(k, 'before')).toBe('OK');
    expect(await c.get(k)).toBe('before');
    expect((await raw(gw, '/healthz', { token: null })).status).toBe(200);
    const stream = await openSse(gw, `/subscribe/${k}`);
    await stream.waitForLine(`data: subscribe,${k},1`);

    await redis.stop();

    // An open event stream ends rather than hanging silently.
    await stream.ended;
    for (const [path, body] of [['/', ['get', k]], ['/pipeline', [['set', k, 'x'], ['get', k]]], ['/multi-exec', [['incr', `${k}:n`]]]] as const) {
      expectUnavailable(await post(gw, path, body), true);
    }
    expectUnavailable(await raw(gw, `/get/${encodeURIComponent(k)}`), true);
    expectUnavailable(await raw(gw, `/subscribe/${k}`, { method: 'POST', body: '[]' }), true);
    const health = await raw(gw, '/healthz', { token: null });
    expect(health.status, show(health)).toBe(503);
    await expect(c.get(k)).rejects.toThrow();
    // Requests just failed for lack of a connection: the gauge must agree.
    expect.soft(metric(await scrape(gw), 'gateway_redis_up'), 'gateway_redis_up while requests answer 503').toBe(0);

    await redis.restart();

    const healthy = await healthyWithin10s(gw);
    expect(healthy.status, show(healthy)).toBe(200);
    // The restarted Redis is empty (no persistence); what matters is that every route works again.
    expect(await c.set(k, 'after')).toBe('OK');
    expect(await c.get(k)).toBe('after');
    const piped = await post(gw, '/pipeline', [['incr', `${k}:n`], ['get', k]]);
    expect(piped.json, show(piped)).toEqual([{ result: 1 }, { result: 'after' }]);
    const tx = await post(gw, '/multi-exec', [['incr', `${k}:n`], ['get', `${k}:n`]]);
    expect(tx.json, show(tx)).toEqual([{ result: 2 }, { result: '2' }]);
    expect(metric(await scrape(gw), 'gateway_redis_up')).toBe(1);
    const again = await openSse(gw, `/subscribe/${k}`);
    try {
      await again.waitForLine(`data: subscribe,${k},1`);
    } finally {
      again.close();
    }
  }, 30_000);
});

describe('a gateway started while Redis is down', () => {
  test('answers 502/503 JSON, then serves once Redis starts', async () => {
    const redis = await startRedisServer();
    await redis.stop();
    const gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_TIMEOUT_MS: '5000' });
    try {
      expectUnavailable(await post(gw, '/', ['ping']));
      await redis.restart();
      const healthy = await healthyWithin10s(gw);
      expect(healthy.status, show(healthy)).toBe(200);
      const res = await post(gw, '/', ['ping']);
      expect(res.json, show(res)).toEqual({ result: 'PONG' });
    } finally {
      await gw.close();
      await redis.stop();
    }
  }, 30_000);
});
