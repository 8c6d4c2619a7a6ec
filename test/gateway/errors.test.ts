/**
 * Every row of the protocol's error table, plus lenient Content-Type and the sync-token header on
 * every answer. Every error body must be JSON `{"error": "…"}`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { freePort } from '../support/redis-process.ts';
import { client, errorOf, post, prefix, privateGateway, raw, shared, show, type PrivateGateway, type RawResponse } from './helpers.ts';

const NOT_INT = 'ERR value is not an integer or out of range';

function expectJsonError(res: RawResponse, status: number | readonly number[]): string {
  const statuses = typeof status === 'number' ? [status] : status;
  expect(statuses, show(res)).toContain(res.status);
  expect(res.headers.get('content-type') ?? '', show(res)).toMatch(/^application\/json/);
  const error = errorOf(res);
  expect(error, show(res)).toBeTypeOf('string');
  expect(res.text, 'no stack traces in answers').not.toMatch(/\n\s+at /);
  return error ?? '';
}

describe('Redis errors', () => {
  const gw = shared();

  test('a Redis error on / is 400 with Redis\'s text verbatim', async () => {
    const k = `${prefix()}k`;
    await post(gw, '/', ['set', k, 'text']);
    expect(expectJsonError(await post(gw, '/', ['incr', k]), 400)).toBe(NOT_INT);
    expect(expectJsonError(await post(gw, '/', ['lpush', k, 'x']), 400)).toBe('WRONGTYPE Operation against a key holding the wrong kind of value');
    expect(expectJsonError(await post(gw, '/', ['get']), 400)).toBe("ERR wrong number of arguments for 'get' command");
  });

  test('the client rejects with the same text (both routes)', async () => {
    const k = `${prefix()}k`;
    const one = client(gw, { autoPipelining: false });
    const auto = client(gw);
    await one.set(k, 'text');
    await expect(one.incr(k)).rejects.toThrow(NOT_INT);
    await expect(auto.incr(k)).rejects.toThrow(NOT_INT);
  });
});

describe('authentication', () => {
  const gw = shared();

  test.each([
    { name: 'no token', token: null },
    { name: 'a wrong token', token: 'not-the-token' },
    { name: 'an empty bearer', token: '' },
  ])('$name → 401 JSON on every route, and nothing runs', async ({ token }) => {
    const k = `${prefix()}k`;
    for (const [path, body] of [['/', ['set', k, 'v']], ['/pipeline', [['set', k, 'v']]], ['/multi-exec', [['set', k, 'v']]]] as const) {
      expectJsonError(await post(gw, path, body, { token }), 401);
    }
    expectJsonError(await raw(gw, `/set/${encodeURIComponent(k)}/v`, { token }), 401);
    expectJsonError(await raw(gw, `/subscribe/${encodeURIComponent(k)}`, { token, method: 'POST', body: '[]' }), 401);
    const check = await post(gw, '/', ['exists', k]);
    expect(check.json, show(check)).toEqual({ result: 0 });
  });

  test('the client with a wrong token gets an error, not data', async () => {
    const wrong = client({ url: gw.url, token: 'not-the-token' }, { autoPipelining: false });
    await expect(wrong.get('anything')).rejects.toThrow();
  });
});

describe('bad request bodies → 400 JSON, nothing runs', () => {
  const gw = shared();

  test.each([
    { name: 'not JSON', path: '/', body: '["set","k",' },
    { name: 'empty body', path: '/', body: '' },
    { name: 'a JSON object', path: '/', body: '{"command":"get"}' },
    { name: 'a JSON string', path: '/', body: '"get"' },
    { name: 'an empty command', path: '/', body: '[]' },
    { name: 'a number as command name', path: '/', body: '[1,"k"]' },
    { name: 'a nested array argument', path: '/', body: '["set","K",["a","b"]]' },
    { name: 'an object argument', path: '/', body: '["set","K",{"a":1}]' },
    { name: 'a null argument', path: '/', body: '["set","K",null]' },
    { name: 'pipeline: not JSON', path: '/pipeline', body: '[["set","K","v"]' },
    { name: 'pipeline: a single command instead of a list', path: '/pipeline', body: '["set","K","v"]' },
    { name: 'pipeline: an object', path: '/pipeline', body: '{"a":1}' },
    { name: 'pipeline: a null argument in the 2nd command', path: '/pipeline', body: '[["set","K","v"],["set","K2",null]]' },
    { name: 'pipeline: a nested array in the 2nd command', path: '/pipeline', body: '[["set","K","v"],["set","K2",[1]]]' },
    { name: 'multi-exec: a null argument', path: '/multi-exec', body: '[["set","K","v"],["set","K2",null]]' },
    { name: 'multi-exec: not a list of commands', path: '/multi-exec', body: '["set","K","v"]' },
  ])('$name ($path)', async ({ path, body }) => {
    const k = `${prefix()}k`;
    const res = await raw(gw, path, { method: 'POST', body: body.replaceAll('"K', `"${k}`), headers: { 'content-type': 'application/json' } });
    expectJsonError(res, 400);
    const check = await post(gw, '/', ['exists', k, `${k}2`]);
    expect(check.json, show(check)).toEqual({ result: 0 });
  });

  test('strings, numbers and booleans are arguments; command names in any case', async () => {
    const p = prefix();
    const res = await post(gw, '/pipeline', [
      ['SeT', `${p}n`, 42],
      ['set', `${p}f`, 1.5],
      ['set', `${p}t`, true],
      ['SET', `${p}b`, false],
      ['mget', `${p}n`, `${p}f`, `${p}t`, `${p}b`],
      ['incrBY', `${p}n`, -2],
    ]);
    expect(res.json, show(res)).toEqual([
      { result: 'OK' }, { result: 'OK' }, { result: 'OK' }, { result: 'OK' },
      { result: ['42', '1.5', 'true', 'false'] },
      { result: 40 },
    ]);
  });
});

describe('limits and upstream failures (private gateways)', () => {
  let small: PrivateGateway;
  let down: PrivateGateway;
  beforeAll(async () => {
    const closed = await freePort();
    [small, down] = await Promise.all([
      privateGateway({ GATEWAY_MAX_BODY_BYTES: '1024', GATEWAY_MAX_PIPELINE_COMMANDS: '10' }),
      privateGateway({ REDIS_URL: `redis://127.0.0.1:${closed}`, GATEWAY_TIMEOUT_MS: '3000' }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([small.close(), down.close()]);
  });

  test('a body over GATEWAY_MAX_BODY_BYTES is 413 JSON; one under it runs', async () => {
    const k = `${prefix()}k`;
    expectJsonError(await post(small, '/', ['set', k, 'x'.repeat(2000)]), 413);
    expectJsonError(await post(small, '/pipeline', Array.from({ length: 100 }, (_, i) => ['set', `${k}${i}`, 'xxxxxxxxxx'])), 413);
    const exists = await post(small, '/', ['exists', k, `${k}0`]);
    expect(exists.json, show(exists)).toEqual({ result: 0 });
    const ok = await post(small, '/', ['set', k, 'x'.repeat(900)]);
    expect(ok.json, show(ok)).toEqual({ result: 'OK' });
  });

  test('a pipeline over GATEWAY_MAX_PIPELINE_COMMANDS is 400 JSON and runs nothing', async () => {
    const p = prefix();
    const cmds = (n: number) => Array.from({ length: n }, (_, i) => ['set', `${p}${i}`, 'v']);
    expectJsonError(await post(small, '/pipeline', cmds(11)), 400);
    expectJsonError(await post(small, '/multi-exec', cmds(11)), 400);
    const none = await post(small, '/', ['exists', `${p}0`]);
    expect(none.json, show(none)).toEqual({ result: 0 });
    const ok = await post(small, '/pipeline', cmds(10));
    expect(ok.json, show(ok)).toEqual(Array.from({ length: 10 }, () => ({ result: 'OK' })));
  });

  test('the client gets the 413 as an error', async () => {
    const redis = client(small, { autoPipelining: false });
    await expect(redis.set(`${prefix()}k`, 'x'.repeat(5000))).rejects.toThrow();
  });

  test('Redis unreachable: 502/503 JSON on every route, no hang, no stack', async () => {
    for (const [path, body] of [['/', ['get', 'k']], ['/pipeline', [['get', 'k']]], ['/multi-exec', [['get', 'k']]]] as const) {
      const error = expectJsonError(await post(down, path, body), [502, 503]);
      expect(error).not.toMatch(/127\.0\.0\.1|ECONNREFUSED/);
    }
    expectJsonError(await raw(down, '/subscribe/some-channel', { method: 'POST', body: '[]' }), [502, 503]);
    expectJsonError(await raw(down, '/healthz', { token: null }), 503);
    const redis = client(down, { autoPipelining: false });
    await expect(redis.get('k')).rejects.toThrow();
  });
});

describe('Content-Type is not required', () => {
  const gw = shared();

  test.each([
    { name: 'missing', headers: {} },
    { name: 'application/json; charset=utf-8', headers: { 'content-type': 'application/json; charset=utf-8' } },
    { name: 'text/plain', headers: { 'content-type': 'text/plain' } },
    { name: 'APPLICATION/JSON', headers: { 'content-type': 'APPLICATION/JSON' } },
  ])('$name', async ({ headers }) => {
    const k = `${prefix()}k`;
    // A Uint8Array body makes fetch send no Content-Type at all.
    const body = new TextEncoder().encode(JSON.stringify([['set', k, 'v'], ['get', k]]));
    const res = await raw(gw, '/pipeline', { method: 'POST', body, headers });
    expect(res.json, show(res)).toEqual([{ result: 'OK' }, { result: 'v' }]);
  });
});

describe('upstash-sync-token on every answer', () => {
  test('200, 400, 401, 403, 413, path form, health, metrics: each carries a fresh token', async () => {
    const gw = shared();
    const strict = await privateGateway({ GATEWAY_MAX_BODY_BYTES: '100' });
    try {
      const answers: RawResponse[] = [
        await post(gw, '/', ['ping']),
        await post(gw, '/pipeline', [['ping']]),
        await post(gw, '/multi-exec', [['ping']]),
        await post(gw, '/', ['incr', 'x', 'y']),
        await post(gw, '/', 'not a command'),
        await post(gw, '/', ['ping'], { token: 'wrong' }),
        await post(strict, '/', ['flushall', 'not-a-mode']),
        await post(strict, '/', ['set', 'k', 'x'.repeat(200)]),
        await raw(gw, '/ping'),
        await raw(gw, '/healthz', { token: null }),
      ];
      const statuses = answers.map((a) => a.status);
      expect(statuses).toEqual([200, 200, 200, 400, 400, 401, 403, 413, 200, 200]);
      const tokens = answers.map((a) => a.headers.get('upstash-sync-token'));
      for (const [i, t] of tokens.entries()) expect(t, `answer ${i}: ${answers[i] ? show(answers[i]) : ''}`).toBeTruthy();
      expect(new Set(tokens.slice(0, 6)).size, 'the value changes per response').toBe(6);
    } finally {
      await strict.close();
    }
  });
});
