/**
 * `/multi-exec`: atomic MULTI…EXEC that no other request's command can land inside, run-time errors
 * as entries, and transactions Redis discards as a whole answered with a non-2xx error.
 */
import { describe, expect, test } from 'vitest';
import { client, errorOf, post, prefix, shared, show } from './helpers.ts';

const NOT_INT = 'ERR value is not an integer or out of range';

describe.each([
  { name: 'base64', base64: true },
  { name: 'plain JSON', base64: false },
])('client transactions ($name)', ({ base64 }) => {
  const redis = client(shared(), { base64 });
  const reader = client(shared(), { base64: true, autoPipelining: false });

  test('redis.multi() runs the commands and answers one entry each', async () => {
    const p = prefix();
    const results = await redis.multi().set(`${p}k`, 'OK').incr(`${p}n`).get(`${p}k`).hset(`${p}h`, { f: 'v' }).hgetall(`${p}h`).exec();
    expect(results).toEqual(['OK', 1, 'OK', 1, { f: 'v' }]);
    expect(await reader.get(`${p}k`)).toBe('OK');
  });

  test('100 concurrent transactions never interleave', async () => {
    const p = prefix();
    const counter = `${p}counter`;
    // Plain auto-pipelined writes to another key run at the same time, on the same gateway.
    const noise = Promise.all(Array.from({ length: 100 }, () => redis.incr(`${p}noise`)));
    const txs = Promise.all(
      Array.from({ length: 100 }, (_, i) => redis.multi().incr(counter).set(`${p}tx:${i}`, `done-${i}`).get(counter).exec()),
    );
    const [results] = await Promise.all([txs, noise]);
    expect(results).toHaveLength(100);
    for (const r of results) {
      expect(r[1]).toBe('OK');
      // Atomic: nothing ran between this transaction's INCR and its GET.
      expect(r[2]).toBe(r[0]);
    }
    expect(results.map((r) => r[0]).sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(await reader.get(counter)).toBe(100);
    expect(await reader.get(`${p}noise`)).toBe(100);
    const perTx = await reader.mget<string[]>(...Array.from({ length: 100 }, (_, i) => `${p}tx:${i}`));
    expect(perTx).toEqual(Array.from({ length: 100 }, (_, i) => `done-${i}`));
  });

  test('a run-time error inside EXEC is an error entry; the other commands ran', async () => {
    const k = `${prefix()}k`;
    const results = await redis.multi().set(k, 'text').incr(k).set(`${k}:after`, 'ran').get(k).exec({ keepErrors: true });
    expect(results).toHaveLength(4);
    expect(results[0]).toMatchObject({ result: 'OK' });
    expect(results[1]?.error).toBe(NOT_INT);
    expect(results[2]).toMatchObject({ result: 'OK' });
    expect(results[3]).toMatchObject({ result: 'text' });
    expect(await reader.get(`${k}:after`)).toBe('ran');
  });
});

describe('/multi-exec wire format', () => {
  const gw = shared();

  test('EXEC results with a run-time error: exact JSON, plain and base64', async () => {
    const k = `${prefix()}k`;
    const plain = await post(gw, '/multi-exec', [['set', k, 'x'], ['incr', k], ['get', k]]);
    expect(plain.status, show(plain)).toBe(200);
    expect(plain.text).toBe(`[{"result":"OK"},{"error":"${NOT_INT}"},{"result":"x"}]`);
    const encoded = await post(gw, '/multi-exec', [['set', k, 'y'], ['incr', k], ['get', k], ['exists', k]], { base64: true });
    expect(encoded.status, show(encoded)).toBe(200);
    expect(encoded.text).toBe(`[{"result":"T0s="},{"error":"${NOT_INT}"},{"result":"eQ=="},{"result":1}]`);
  });

  test.each([
    { why: 'wrong number of arguments', bad: ['incr'] },
    { why: 'an unknown command', bad: ['nosuchcommand', 'x'] },
  ])('a queuing error ($why) discards the whole transaction: non-2xx {"error"}, nothing applied', async ({ bad }) => {
    const k = `${prefix()}k`;
    const res = await post(gw, '/multi-exec', [['set', k, 'v'], bad, ['set', `${k}:2`, 'v']]);
    expect(res.status, show(res)).toBeGreaterThanOrEqual(400);
    expect(res.status, show(res)).toBeLessThan(500);
    expect(errorOf(res), show(res)).toMatch(/EXECABORT|wrong number of arguments|unknown command/);
    const check = await post(gw, '/', ['exists', k, `${k}:2`]);
    expect(check.json, show(check)).toEqual({ result: 0 });
  });

  test('MULTI or EXEC inside the body is refused with 400 before anything runs', async () => {
    const k = `${prefix()}k`;
    for (const inner of [['multi'], ['exec'], ['discard']]) {
      const res = await post(gw, '/multi-exec', [['set', k, 'v'], inner]);
      expect(res.status, show(res)).toBe(400);
      expect(errorOf(res), show(res)).toBeDefined();
    }
    const check = await post(gw, '/', ['exists', k]);
    expect(check.json, show(check)).toEqual({ result: 0 });
  });

  test('a blocking command inside a transaction does not block (Redis runs it as a non-blocking pop)', async () => {
    const k = `${prefix()}empty`;
    const res = await post(gw, '/multi-exec', [['blpop', k, 0], ['rpush', k, 'a'], ['blpop', k, 0]]);
    expect(res.status, show(res)).toBe(200);
    expect(res.json).toEqual([{ result: null }, { result: 1 }, { result: [k, 'a'] }]);
  });
});
