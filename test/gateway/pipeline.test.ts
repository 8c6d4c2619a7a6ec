/**
 * `/pipeline`: explicit client pipelines, auto-pipelined batches, order, and per-command errors.
 */
import { describe, expect, test } from 'vitest';
import { countTrips } from '../support/round-trips.ts';
import { client, post, prefix, shared, show } from './helpers.ts';

const NOT_INT = 'ERR value is not an integer or out of range';

describe.each([
  { name: 'base64', base64: true },
  { name: 'plain JSON', base64: false },
])('client pipelines ($name)', ({ base64 }) => {
  const redis = client(shared(), { base64, autoPipelining: false });

  test('a pipeline of one command', async () => {
    const k = `${prefix()}one`;
    expect(await redis.pipeline().set(k, 'OK').exec()).toEqual(['OK']);
    expect(await redis.pipeline().get(k).exec()).toEqual(['OK']);
  });

  test('a pipeline of 1000 commands answers in request order', async () => {
    const p = prefix();
    const pipe = redis.pipeline();
    for (let i = 0; i < 500; i++) pipe.rpush(`${p}list`, `v${i}`);
    for (let i = 0; i < 500; i++) pipe.lindex(`${p}list`, i);
    const results = await pipe.exec();
    expect(results).toHaveLength(1000);
    expect(results.slice(0, 500)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    expect(results.slice(500)).toEqual(Array.from({ length: 500 }, (_, i) => `v${i}`));
    expect(await redis.llen(`${p}list`)).toBe(500);
  });

  test('one failing command gives an error entry; the others run (keepErrors)', async () => {
    const k = `${prefix()}k`;
    const results = await redis.pipeline().set(k, 'text').incr(k).get(k).exec({ keepErrors: true });
    expect(results).toHaveLength(3);
    expect(results[0]).toMatchObject({ result: 'OK' });
    expect(results[0]?.error).toBeUndefined();
    expect(results[1]?.error).toBe(NOT_INT);
    expect(results[2]).toMatchObject({ result: 'text' });
  });

  test('without keepErrors the client throws naming the failing command, after all ran', async () => {
    const k = `${prefix()}k`;
    await expect(redis.pipeline().set(k, 'text').incr(k).set(`${k}:after`, 'ran').exec()).rejects.toThrow(`Command 2 [ incr ] failed: ${NOT_INT}`);
    expect(await redis.get(`${k}:after`)).toBe('ran');
  });
});

describe('auto-pipelining (the client default)', () => {
  const redis = client(shared());

  test('concurrent calls arrive as /pipeline batches and each gets its own answer', async () => {
    const p = prefix();
    const { result, trips } = await countTrips(shared().url, async () => {
      await Promise.all(Array.from({ length: 50 }, (_, i) => redis.set(`${p}${i}`, `value-${i}`)));
      return Promise.all(Array.from({ length: 50 }, (_, i) => redis.get(`${p}${i}`)));
    });
    expect(result).toEqual(Array.from({ length: 50 }, (_, i) => `value-${i}`));
    expect(trips.every((t) => t.path === '/pipeline'), JSON.stringify(trips)).toBe(true);
    expect(trips.length).toBeLessThan(10);
  });

  test('a failing command rejects only its own promise', async () => {
    const k = `${prefix()}k`;
    await redis.set(k, 'text');
    // Reads and writes travel in separate batches, so the write batch here is [incr, set, set].
    const settled = await Promise.allSettled([redis.set(`${k}:1`, 'a'), redis.incr(k), redis.set(`${k}:2`, 'b'), redis.get(k)]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    const rejected = settled[1];
    expect(rejected?.status === 'rejected' ? String(rejected.reason) : '').toContain(NOT_INT);
    expect(settled[3]).toEqual({ status: 'fulfilled', value: 'text' });
    expect(await Promise.all([redis.get(`${k}:1`), redis.get(`${k}:2`)])).toEqual(['a', 'b']);
  });
});

describe('/pipeline wire format', () => {
  const gw = shared();

  test('an error entry is exactly {"error": "<Redis text>"} between result entries (plain)', async () => {
    const k = `${prefix()}k`;
    const res = await post(gw, '/pipeline', [['set', k, 'x'], ['incr', k], ['get', k], ['get', `${k}:none`]]);
    expect(res.status, show(res)).toBe(200);
    expect(res.text).toBe(`[{"result":"OK"},{"error":"${NOT_INT}"},{"result":"x"},{"result":null}]`);
  });

  test('with base64 every string result is encoded, "OK" included, and the error text is not', async () => {
    const k = `${prefix()}k`;
    const res = await post(gw, '/pipeline', [['set', k, 'x'], ['incr', k], ['get', k], ['ping'], ['exists', k]], { base64: true });
    expect(res.status, show(res)).toBe(200);
    expect(res.text).toBe(`[{"result":"T0s="},{"error":"${NOT_INT}"},{"result":"eA=="},{"result":"UE9ORw=="},{"result":1}]`);
  });

  test('unknown commands and wrong arity are error entries too', async () => {
    const k = `${prefix()}k`;
    const res = await post(gw, '/pipeline', [['get'], ['set', k, 'v'], ['nosuchcommand', 'a']]);
    expect(res.status, show(res)).toBe(200);
    const body = res.json as { result?: unknown; error?: unknown }[];
    expect(body).toHaveLength(3);
    expect(body[0]?.error).toBe("ERR wrong number of arguments for 'get' command");
    expect(body[1]).toEqual({ result: 'OK' });
    expect(String(body[2]?.error)).toMatch(/^ERR unknown command 'nosuchcommand'/i);
  });

  test('an empty pipeline is a 400 JSON error, not a crash', async () => {
    const res = await post(gw, '/pipeline', []);
    expect(res.status, show(res)).toBe(400);
    expect(typeof (res.json as { error?: unknown }).error).toBe('string');
  });
});
