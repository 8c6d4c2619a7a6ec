/**
 * What curl users and operators touch: the path form, `?_token=`, health, metrics text, the base
 * path, and GATEWAY_LATENCY_MS.
 */
import { describe, expect, test } from 'vitest';
import { client, errorOf, post, prefix, privateGateway, raw, shared, show } from './helpers.ts';

describe('path form', () => {
  const gw = shared();

  test('GET /set/<key>/<value> then GET /get/<key>', async () => {
    const k = encodeURIComponent(`${prefix()}k`);
    const set = await raw(gw, `/set/${k}/hello`);
    expect(set.status, show(set)).toBe(200);
    expect(set.json).toEqual({ result: 'OK' });
    const get = await raw(gw, `/get/${k}`);
    expect(get.json, show(get)).toEqual({ result: 'hello' });
    const encoded = await raw(gw, `/get/${k}`, { base64: true });
    expect(encoded.json, show(encoded)).toEqual({ result: Buffer.from('hello').toString('base64') });
  });

  test('percent-encoded arguments (slash, space, unicode), options, integers, trailing slash', async () => {
    const key = `${prefix()}a/b c`;
    const k = encodeURIComponent(key);
    const value = 'x/y z ü🚀';
    const set = await raw(gw, `/SET/${k}/${encodeURIComponent(value)}/EX/100`);
    expect(set.json, show(set)).toEqual({ result: 'OK' });
    expect(await client(gw).get(key)).toBe(value);
    const ttl = await raw(gw, `/ttl/${k}/`);
    expect(ttl.status, show(ttl)).toBe(200);
    expect((ttl.json as { result: number }).result).toBeGreaterThan(0);
    const incr = await raw(gw, `/incr/${k}-n`);
    expect(incr.text).toBe('{"result":1}');
  });

  test('a POST body is the last argument, verbatim', async () => {
    const key = `${prefix()}k`;
    const body = '{"not":"parsed","as":["a","command"]}';
    const set = await raw(gw, `/set/${encodeURIComponent(key)}`, { method: 'POST', body });
    expect(set.json, show(set)).toEqual({ result: 'OK' });
    const get = await post(gw, '/', ['get', key]);
    expect(get.json, show(get)).toEqual({ result: body });
    const hset = await raw(gw, `/hset/${encodeURIComponent(`${key}:h`)}/field`, { method: 'POST', body: 'hello world' });
    expect(hset.json, show(hset)).toEqual({ result: 1 });
    expect(await client(gw).hget(`${key}:h`, 'field')).toBe('hello world');
  });

  test('a Redis error in the path form is 400 with Redis\'s text', async () => {
    const k = encodeURIComponent(`${prefix()}k`);
    await raw(gw, `/set/${k}/text`);
    const res = await raw(gw, `/incr/${k}`);
    expect(res.status, show(res)).toBe(400);
    expect(errorOf(res)).toBe('ERR value is not an integer or out of range');
  });
});

describe('?_token=', () => {
  const gw = shared();

  test('authenticates the path form and POST routes without a header', async () => {
    const k = encodeURIComponent(`${prefix()}k`);
    const token = encodeURIComponent(gw.token);
    const set = await raw(gw, `/set/${k}/v?_token=${token}`, { token: null });
    expect(set.json, show(set)).toEqual({ result: 'OK' });
    const get = await raw(gw, `/get/${k}?_token=${token}`, { token: null });
    expect(get.json, show(get)).toEqual({ result: 'v' });
    const piped = await raw(gw, `/pipeline?_token=${token}`, { token: null, method: 'POST', body: JSON.stringify([['get', decodeURIComponent(k)]]) });
    expect(piped.json, show(piped)).toEqual([{ result: 'v' }]);
  });

  test('a wrong _token is 401', async () => {
    const res = await raw(gw, '/get/anything?_token=wrong', { token: null });
    expect(res.status, show(res)).toBe(401);
    expect(errorOf(res)).toBeTypeOf('string');
  });
});

describe('health and metrics (no token needed)', () => {
  const gw = shared();

  test('GET /healthz is 200 JSON while Redis answers', async () => {
    const res = await raw(gw, '/healthz', { token: null });
    expect(res.status, show(res)).toBe(200);
    expect(res.headers.get('content-type') ?? '').toMatch(/^application\/json/);
  });

  test('GET /metrics is Prometheus text with the request, command and duration families', async () => {
    await post(gw, '/', ['ping']);
    const res = await raw(gw, '/metrics', { token: null });
    expect(res.status, show(res)).toBe(200);
    expect(res.headers.get('content-type') ?? '').toMatch(/^text\/plain/);
    expect(res.text).toContain('gateway_http_requests_total{');
    expect(res.text).toContain('gateway_commands_total{');
    expect(res.text).toContain('gateway_request_duration_seconds_bucket{');
    expect(res.text).toContain('# TYPE gateway_request_duration_seconds histogram');
    expect(res.text).not.toContain(gw.token);
  });

  test('an unsupported method is a JSON error, not a crash', async () => {
    const res = await raw(gw, '/', { method: 'PUT', body: '["ping"]' });
    expect(res.status, show(res)).toBeGreaterThanOrEqual(400);
    expect(res.status, show(res)).toBeLessThan(500);
    expect(errorOf(res), show(res)).toBeTypeOf('string');
  });
});

describe('GATEWAY_BASE_PATH', () => {
  test('every route, the client\'s included, works under the prefix', async () => {
    const gw = await privateGateway({ GATEWAY_BASE_PATH: '/redis/v1' });
    try {
      expect(gw.url).toMatch(/\/redis\/v1$/);
      const redis = client(gw);
      const k = `${prefix()}k`;
      expect(await redis.set(k, 'under a prefix')).toBe('OK');
      expect(await redis.multi().get(k).exec()).toEqual(['under a prefix']);
      const path = await raw(gw, `/get/${encodeURIComponent(k)}`);
      expect(path.json, show(path)).toEqual({ result: 'under a prefix' });
      const health = await raw(gw, '/healthz', { token: null });
      expect(health.status, show(health)).toBe(200);
    } finally {
      await gw.close();
    }
  });
});

describe('GATEWAY_LATENCY_MS', () => {
  // The one timing check of the suite: it asserts that the configured delay is applied at all.
  test('a gateway with 300 ms of latency takes at least 300 ms to answer', async () => {
    const gw = await privateGateway({ GATEWAY_LATENCY_MS: '300' });
    try {
      const started = performance.now();
      const res = await post(gw, '/', ['ping']);
      const elapsed = performance.now() - started;
      expect(res.json, show(res)).toEqual({ result: 'PONG' });
      expect(elapsed).toBeGreaterThanOrEqual(300);
    } finally {
      await gw.close();
    }
  });
});
