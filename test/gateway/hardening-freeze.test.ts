/**
 * No request freezes Redis or parks connections: the Lua debugger is out of reach, a script that
 * outlives its request is killed, blocking timeouts are read as Redis reads them and must fit the
 * deadline together, and a dedicated connection is closed when its request's deadline passes.
 * Every test has a private redis-server it may freeze.
 */
import type { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { eventually, errorOf, openSse, post, privateGateway, show, type PrivateGateway } from './helpers.ts';
import { BUSY_1S, clientList, direct, infoField, sleep } from './processes.ts';

let redis: RedisProcess;
let look: Redis;
let gw: PrivateGateway | undefined;

beforeEach(async () => {
  redis = await startRedisServer();
  look = direct(redis.url);
});
// Redis first: a test that failed may have left it frozen, and a frozen Redis must not outlive
// the run (nor hold up the gateway's shutdown).
afterEach(async () => {
  look.disconnect();
  await redis.stop();
  await gw?.close();
  gw = undefined;
});

/** PING straight to Redis, given up after `ms`: "PONG", an error text, or "no answer". */
async function pingWithin(ms: number): Promise<string> {
  const answer = look.ping().then(String, (err: unknown) => (err instanceof Error ? err.message : String(err)));
  return Promise.race([answer, sleep(ms).then(() => 'no answer')]);
}

describe('the Lua debugger', () => {
  test('SCRIPT DEBUG is refused even with admin commands allowed, and the next EVAL runs normally', async () => {
    gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_ALLOW_ADMIN_COMMANDS: 'true', GATEWAY_TIMEOUT_MS: '2000' });
    for (const mode of ['sync', 'yes']) {
      const res = await post(gw, '/', ['script', 'debug', mode]);
      expect(res.status, show(res)).toBe(403);
      expect(errorOf(res), show(res)).toMatch(/^NOPERM SCRIPT DEBUG is never allowed/);
    }
    const ran = await post(gw, '/', ['eval', 'return 1', '0']);
    expect(ran.json, show(ran)).toEqual({ result: 1 });
    expect(await pingWithin(1_000)).toBe('PONG');
  });
});

describe('a script that outlives its request is killed by the gateway', () => {
  test.each([
    { name: 'EVAL', load: undefined, cmd: ['eval', 'while true do end', '0'] },
    { name: 'FCALL', load: "#!lua name=spin\nredis.register_function('spin', function() while true do end end)", cmd: ['fcall', 'spin', '0'] },
  ])('$name of an endless loop: 504, then Redis answers everyone again', async ({ load, cmd }) => {
    await look.config('SET', 'busy-reply-threshold', '200');
    if (load) await look.call('FUNCTION', 'LOAD', load);
    gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_TIMEOUT_MS: '1000' });
    const res = await post(gw, '/', cmd);
    expect(res.status, show(res)).toBe(504);
    await eventually(async () => expect(await pingWithin(500)).toBe('PONG'), { timeoutMs: 5_000 });
    const after = await post(gw, '/pipeline', [['set', 'k', 'v'], ['get', 'k']]);
    expect(after.json, show(after)).toEqual([{ result: 'OK' }, { result: 'v' }]);
    expect(gw.logs.join('\n')).toMatch(/killed a (script|function) that outlived its request's deadline/);
  });

  test('a script that wrote before looping cannot be killed: the gateway says so in its log', async () => {
    await look.config('SET', 'busy-reply-threshold', '200');
    gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_TIMEOUT_MS: '1000' });
    const res = await post(gw, '/', ['eval', "redis.call('set', KEYS[1], 'x') while true do end", '1', 'written']);
    expect(res.status, show(res)).toBe(504);
    await eventually(() => expect(gw?.logs.join('\n')).toMatch(/has already written, so Redis cannot kill it/), { timeoutMs: 3_000 });
    expect(await pingWithin(300)).toMatch(/^BUSY/);
  });
});

describe('blocking commands, bounded as Redis reads them', () => {
  test('XREAD BLOCK 100 BLOCK 0 blocks forever in Redis (the last BLOCK wins): refused, so three of them leave GATEWAY_MAX_CONNECTIONS=3 free', async () => {
    gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_TIMEOUT_MS: '1000', GATEWAY_MAX_CONNECTIONS: '3' });
    const attempts = await Promise.all([1, 2, 3].map(() => post(gw as PrivateGateway, '/', ['xread', 'block', '100', 'BLOCK', '0', 'streams', 's', '$'])));
    for (const res of attempts) {
      expect(res.status, show(res)).toBe(400);
      expect(errorOf(res), show(res)).toMatch(/timeout 0 would block forever/);
    }
    expect(await infoField(look, 'clients', 'blocked_clients')).toBe('0');
    const blpop = await post(gw, '/', ['blpop', 'q', '0.1']);
    expect(blpop.json, show(blpop)).toEqual({ result: null });
    const stream = await openSse(gw, '/subscribe/still-possible');
    try {
      expect(stream.status).toBe(200);
      await stream.waitForLine('data: subscribe,still-possible,1');
    } finally {
      stream.close();
    }
  });

  test('options end at STREAMS: a stream key called BLOCK does not make XREAD blocking', async () => {
    gw = await privateGateway({ REDIS_URL: redis.url });
    const res = await post(gw, '/', ['xread', 'count', '1', 'streams', 'block', '0']);
    expect(res.json, show(res)).toEqual({ result: null });
  });

  test('4 × BLPOP 2.9 under a 3 s deadline: refused whole (the timeouts add up), nothing left blocked in Redis', async () => {
    gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_TIMEOUT_MS: '3000' });
    const res = await post(gw, '/pipeline', [['blpop', 'q', '2.9'], ['blpop', 'q', '2.9'], ['blpop', 'q', '2.9'], ['blpop', 'q', '2.9']]);
    expect(res.status, show(res)).toBe(400);
    expect(errorOf(res), show(res)).toMatch(/add up to 11600 ms/);
    expect(await infoField(look, 'clients', 'blocked_clients')).toBe('0');
    const fits = await post(gw, '/pipeline', [['blpop', 'q', '0.2'], ['blpop', 'q', '0.2']]);
    expect(fits.json, show(fits)).toEqual([{ result: null }, { result: null }]);
  });

  test('a dedicated connection is closed when its request\'s deadline passes: no client stays blocked in Redis', async () => {
    gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_TIMEOUT_MS: '600' });
    // Redis is busy for ~1 s, so the BLPOP (0.5 s, within the 600 ms deadline) only starts after
    // its request has answered 504.
    const busy = post(gw, '/', ['eval', BUSY_1S, '0']);
    await sleep(50);
    const blpop = await post(gw, '/', ['blpop', 'q', '0.5']);
    expect(blpop.status, show(blpop)).toBe(504);
    expect((await busy).status).toBe(504);
    await eventually(async () => expect(await pingWithin(200)).toBe('PONG'), { timeoutMs: 3_000 });
    await sleep(100);
    expect(await infoField(look, 'clients', 'blocked_clients')).toBe('0');
    expect((await clientList(look)).join('\n')).not.toMatch(/cmd=blpop/);
  });
});
