/**
 * The script alias map (shebang-flag SHA → rewritten SHA) lives in Redis, so a gateway that never
 * saw a script's EVAL still answers its warm EVALSHA in one Redis script call: what makes
 * `@upstash/ratelimit` stay one EVALSHA on any GATEWAY_WORKERS process or replica. Each gateway
 * here is its own process-like instance (its own in-memory copy), on a Redis of this file's own.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Redis as IORedis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ALIAS_KEY, ALIAS_LIMIT } from '../../gateway/scripts.ts';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { errorOf, post, privateGateway, show, type PrivateGateway } from './helpers.ts';
import { calls, direct } from './processes.ts';

const sha1 = (text: string) => createHash('sha1').update(text).digest('hex');

let server: RedisProcess;
let redis: IORedis;
const token = randomUUID();
const gateways: PrivateGateway[] = [];
/** A gateway with the shared token: the same derived alias secret as the others. */
async function replica(env: Record<string, string> = {}): Promise<PrivateGateway> {
  const gw = await privateGateway({ REDIS_URL: server.url, GATEWAY_TOKEN: token, ...env });
  gateways.push(gw);
  return gw;
}
beforeAll(async () => {
  server = await startRedisServer();
  redis = direct(server.url);
});
afterAll(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  redis.disconnect();
  await server.stop();
});

/** A flagged script only Upstash understands, unique per test. */
function flagged(result: string): { script: string; sha: string } {
  const script = `#!lua flags=allow-key-locking\nreturn '${result}'`;
  return { script, sha: sha1(script) };
}

describe('script aliases shared through Redis', () => {
  test('an EVAL on one gateway makes the EVALSHA of the original SHA work on another, in one HMGET then none', async () => {
    const a = await replica();
    const b = await replica();
    const { script, sha } = flagged(randomUUID());
    const evaled = await post(a, '/', ['EVAL', script, '0']);
    expect(evaled.json, show(evaled)).toMatchObject({ result: expect.any(String) });

    const hmget0 = await calls(redis, 'hmget');
    const first = await post(b, '/', ['EVALSHA', sha, '0']);
    expect(errorOf(first), show(first)).toBeUndefined();
    expect(first.json).toEqual(evaled.json);
    expect(await calls(redis, 'hmget')).toBe(hmget0 + 1);

    // Warm: b now knows the alias itself.
    const second = await post(b, '/', ['EVALSHA', sha, '0']);
    expect(second.json).toEqual(evaled.json);
    expect(await calls(redis, 'hmget')).toBe(hmget0 + 1);

    // SCRIPT EXISTS answers for the original SHA too, on a third gateway.
    const c = await replica();
    const exists = await post(c, '/', ['SCRIPT', 'EXISTS', sha]);
    expect(exists.json, show(exists)).toEqual({ result: [1] });
  });

  test('an ordinary EVALSHA costs one HMGET at most once per 10 s per gateway', async () => {
    const a = await replica();
    const plain = `return '${randomUUID()}'`;
    const loaded = await post(a, '/', ['SCRIPT', 'LOAD', plain]);
    expect(loaded.json).toEqual({ result: sha1(plain) });
    const before = await calls(redis, 'hmget');
    for (let i = 0; i < 5; i++) {
      const res = await post(a, '/', ['EVALSHA', sha1(plain), '0']);
      expect(errorOf(res), show(res)).toBeUndefined();
    }
    expect(await calls(redis, 'hmget')).toBe(before + 1);
  });

  test('a forged alias (written by a token, not signed by the gateways) is ignored: NOSCRIPT, never the other script', async () => {
    const a = await replica();
    const evil = `return 'evil ${randomUUID()}'`;
    await post(a, '/', ['SCRIPT', 'LOAD', evil]);
    const { sha } = flagged(randomUUID());
    // What a token that may write any key could do: point the victim's SHA at its own script.
    await post(a, '/', ['HSET', ALIAS_KEY, sha, `${sha1(evil)}.${'0'.repeat(32)}`]);
    const res = await post(a, '/', ['EVALSHA', sha, '0']);
    expect(errorOf(res), show(res)).toMatch(/^NOSCRIPT/);
  });

  test('a gateway with other tokens (another secret) does not trust the aliases; the client falls back to EVAL and it works', async () => {
    const a = await replica();
    const { script, sha } = flagged(randomUUID());
    await post(a, '/', ['EVAL', script, '0']);
    const other = await privateGateway({ REDIS_URL: server.url });
    gateways.push(other);
    const res = await post(other, '/', ['EVALSHA', sha, '0']);
    expect(errorOf(res), show(res)).toMatch(/^NOSCRIPT/);
    const fallback = await post(other, '/', ['EVAL', script, '0']);
    expect(errorOf(fallback), show(fallback)).toBeUndefined();
    const warm = await post(other, '/', ['EVALSHA', sha, '0']);
    expect(warm.json).toEqual(fallback.json);
  });

  test('Redis forgets everything (FLUSHALL, SCRIPT FLUSH): NOSCRIPT, then EVAL makes the alias again for every gateway', async () => {
    const a = await replica();
    const b = await replica();
    const { script, sha } = flagged(randomUUID());
    await post(a, '/', ['EVAL', script, '0']);
    expect((await post(b, '/', ['EVALSHA', sha, '0'])).json).toMatchObject({ result: expect.any(String) });
    await redis.flushall();
    await redis.script('FLUSH');
    const lost = await post(b, '/', ['EVALSHA', sha, '0']);
    expect(errorOf(lost), show(lost)).toMatch(/^NOSCRIPT/);
    await post(b, '/', ['EVAL', script, '0']);
    const c = await replica();
    const res = await post(c, '/', ['EVALSHA', sha, '0']);
    expect(errorOf(res), show(res)).toBeUndefined();
    expect(await redis.hexists(ALIAS_KEY, sha)).toBe(1);
  });

  test(`the alias hash never holds more than ${ALIAS_LIMIT} fields`, async () => {
    const a = await replica();
    // Fill it to the limit directly (fast), then one more EVAL of a flagged script.
    const fields: string[] = [];
    for (let i = 0; i < ALIAS_LIMIT; i++) fields.push(sha1(`filler ${i}`), 'x');
    await redis.hset(ALIAS_KEY, ...fields);
    const { script } = flagged(randomUUID());
    await post(a, '/', ['EVAL', script, '0']);
    await expect.poll(() => redis.hlen(ALIAS_KEY)).toBeLessThanOrEqual(ALIAS_LIMIT);
  });
});
