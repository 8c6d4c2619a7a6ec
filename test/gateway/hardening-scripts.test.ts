/**
 * A token's policy holds inside EVAL, EVALSHA, EVAL_RO and FCALL: the gateway has Redis enforce it
 * through one ACL user per policy (or the operator's own user), and refuses scripts for restricted
 * tokens where no ACL user can be had. Against private redis-servers, looked at directly.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { client, errorOf, eventually, post, privateGateway, raw, show, type RawResponse, type Target } from './helpers.ts';
import { clientList, direct, privateStack, type PrivateStack } from './processes.ts';

function refused(res: RawResponse): void {
  expect([400, 403], show(res)).toContain(res.status);
  expect(errorOf(res), show(res)).toBeTypeOf('string');
}

/** The gateway's ACL users on `redis`, with their password counts. */
async function gatewayUsers(look: Redis): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const name of (await look.acl('USERS')) as string[]) {
    if (!name.startsWith('edge-gateway-')) continue;
    const info = (await look.call('ACL', 'GETUSER', name)) as unknown[];
    const i = info.indexOf('passwords');
    out.set(name, Array.isArray(info[i + 1]) ? (info[i + 1] as unknown[]).length : 0);
  }
  return out;
}

describe('the default policy (admin commands denied) binds scripts', () => {
  const t = { app: randomUUID(), ro: randomUUID(), db1: randomUUID() };
  let stack: PrivateStack;
  let look: Redis;
  const as = (token: string): Target => stack.as(token);

  beforeAll(async () => {
    stack = await privateStack({
      tokens: (url) => [
        { name: 'app', token: t.app, redisUrl: url },
        { name: 'ro', token: t.ro, redisUrl: url, readonly: true },
        { name: 'db1', token: t.db1, redisUrl: `${url}/1` },
      ],
    });
    look = stack.look;
  });
  afterAll(() => stack.close());

  test('EVAL calling FLUSHALL or FLUSHDB is refused by Redis; the data stays', async () => {
    await look.set('canary', 'alive');
    for (const cmd of ['FLUSHALL', 'FLUSHDB']) {
      refused(await post(as(t.app), '/', ['eval', `return redis.call("${cmd}")`, '0']));
    }
    expect(await look.get('canary')).toBe('alive');
    // Ordinary scripts still run.
    const ok = await post(as(t.app), '/', ['eval', 'return redis.call("get", KEYS[1])', '1', 'canary']);
    expect(ok.json, show(ok)).toEqual({ result: 'alive' });
  });

  test('SWAPDB is refused, as a command and inside a script', async () => {
    await look.set('canary', 'in-db0');
    refused(await post(as(t.app), '/', ['swapdb', '0', '1']));
    refused(await post(as(t.app), '/', ['eval', 'return redis.call("swapdb", 0, 1)', '0']));
    expect(await look.get('canary')).toBe('in-db0');
  });

  test('a token bound to database 1 cannot reach database 0 from a script (SELECT), nor with COPY … DB or MOVE', async () => {
    await look.set('db0-secret', 'not-for-db1');
    const sneak = await post(as(t.db1), '/', ['eval', "redis.call('select', 0) return redis.call('get', KEYS[1])", '1', 'db0-secret']);
    refused(sneak);
    expect(sneak.text).not.toContain('not-for-db1');
    await post(as(t.db1), '/', ['set', 'mine', 'v']);
    refused(await post(as(t.db1), '/', ['copy', 'mine', 'db0-secret', 'DB', '0', 'REPLACE']));
    refused(await post(as(t.db1), '/', ['eval', "return redis.call('copy', KEYS[1], KEYS[2], 'db', 0, 'replace')", '2', 'mine', 'db0-secret']));
    refused(await post(as(t.db1), '/', ['move', 'mine', '0']));
    expect(await look.get('db0-secret')).toBe('not-for-db1');
    // COPY within its own database works.
    const copied = await post(as(t.db1), '/pipeline', [['copy', 'mine', 'mine2'], ['get', 'mine2']]);
    expect(copied.json, show(copied)).toEqual([{ result: 1 }, { result: 'v' }]);
  });

  test('a read-only token\'s script cannot write, nor read INFO (whose paths the gateway hides from it)', async () => {
    refused(await post(as(t.ro), '/', ['eval_ro', 'return redis.call("set", KEYS[1], "x")', '1', 'canary']));
    const info = await post(as(t.ro), '/', ['eval_ro', 'return redis.call("info", "server")', '0']);
    refused(info);
    expect(info.text).not.toMatch(/executable:/);
  });

  test('@upstash/redis scripts and a warm EVALSHA still work for the default token', async () => {
    const redis = client(as(t.app), { autoPipelining: false });
    const script = redis.createScript<number>(`-- ${randomUUID()}\nreturn redis.call('incr', KEYS[1])`);
    expect(await script.exec(['counter'], [])).toBe(1);
    expect(await script.exec(['counter'], [])).toBe(2);
  });
});

describe('a token whose deny list names DEL and EVAL', () => {
  const token = randomUUID();
  let stack: PrivateStack;
  let look: Redis;
  const as = (): Target => stack.as(token);

  beforeAll(async () => {
    stack = await privateStack({
      tokens: (url) => [{ name: 'no-del', token, redisUrl: url, deny: ['DEL', 'EVAL'] }],
      // Admin commands allowed, so FUNCTION LOAD reaches Redis: the deny list must still hold in FCALL.
      env: { GATEWAY_ALLOW_ADMIN_COMMANDS: 'true' },
    });
    look = stack.look;
  });
  afterAll(() => stack.close());

  test('SCRIPT LOAD + EVALSHA of a script calling DEL: Redis refuses the DEL, the key stays', async () => {
    await look.set('victim', 'v');
    const load = await post(as(), '/', ['script', 'load', "return redis.call('del', KEYS[1])"]);
    expect(load.status, show(load)).toBe(200);
    const sha = String((load.json as { result: unknown }).result);
    refused(await post(as(), '/', ['evalsha', sha, '1', 'victim']));
    expect(await look.get('victim')).toBe('v');
  });

  test('FUNCTION LOAD + FCALL of a function calling DEL: Redis refuses the DEL, the key stays', async () => {
    await look.set('victim', 'v');
    const lib = `#!lua name=del${randomUUID().slice(0, 8)}\nredis.register_function('remove', function(keys) return redis.call('del', keys[1]) end)`;
    const load = await post(as(), '/', ['function', 'load', 'replace', lib]);
    expect(load.status, show(load)).toBe(200);
    refused(await post(as(), '/', ['fcall', 'remove', '1', 'victim']));
    expect(await look.get('victim')).toBe('v');
  });

  test('EVAL_RO is covered by the deny of EVAL', async () => {
    const res = await post(as(), '/', ['eval_ro', 'return 1', '0']);
    expect(res.status, show(res)).toBe(403);
    expect(errorOf(res), show(res)).toBe('NOPERM EVAL_RO is denied for this token');
  });
});

describe('where the gateway may not create ACL users', () => {
  const t = { restricted: randomUUID(), trusted: randomUUID() };
  let stack: PrivateStack;
  let look: Redis;
  const as = (token: string): Target => stack.as(token);

  beforeAll(async () => {
    // The gateway's own Redis user may do everything except administration (ACL SETUSER included).
    const asGateway = (port: number) => `redis://gateway:gw-pass@127.0.0.1:${port}`;
    stack = await privateStack({
      prepare: (redis) => redis.acl('SETUSER', 'gateway', 'on', '>gw-pass', '~*', '&*', '+@all', '-@admin').then(() => undefined),
      tokens: (_url, port) => [
        { name: 'restricted', token: t.restricted, redisUrl: asGateway(port), deny: ['DEL'] },
        { name: 'trusted', token: t.trusted, redisUrl: asGateway(port) },
      ],
      env: (redis) => ({ GATEWAY_ALLOW_ADMIN_COMMANDS: 'true', REDIS_URL: asGateway(redis.port) }),
    });
    look = stack.look;
  });
  afterAll(() => stack.close());

  test('a restricted token gets scripts refused (403, saying why); its other commands work', async () => {
    await look.set('victim', 'v');
    for (const cmd of [['eval', "return redis.call('del', KEYS[1])", '1', 'victim'], ['evalsha', '0'.repeat(40), '0'], ['eval_ro', 'return 1', '0'], ['fcall', 'f', '0']]) {
      const res = await post(as(t.restricted), '/', cmd);
      expect(res.status, show(res)).toBe(403);
      expect(errorOf(res), show(res)).toMatch(/scripts are refused for this token because the gateway cannot have Redis enforce its policy/);
    }
    expect(await look.get('victim')).toBe('v');
    const get = await post(as(t.restricted), '/', ['get', 'victim']);
    expect(get.json, show(get)).toEqual({ result: 'v' });
    expect(stack.gw.logs.join('\n')).toMatch(/may not run ACL SETUSER, so scripts are refused for the restricted token\(s\) restricted/);
  });

  test('a token with nothing to enforce (admin allowed, no lists) still runs scripts', async () => {
    const res = await post(as(t.trusted), '/', ['eval', 'return 7', '0']);
    expect(res.json, show(res)).toEqual({ result: 7 });
  });
});

describe('a Redis user the operator manages (redisUser in the tokens file)', () => {
  const token = randomUUID();
  let stack: PrivateStack;
  let look: Redis;

  beforeAll(async () => {
    stack = await privateStack({
      prepare: (redis) => redis.acl('SETUSER', 'dashboard', 'on', '>dash-pass', '~*', '&*', '-@all', '+@read', '+eval_ro', '+evalsha_ro', '+ping').then(() => undefined),
      tokens: (url) => [{ name: 'dash', token, redisUrl: url, readonly: true, redisUser: 'dashboard', redisPassword: 'dash-pass' }],
    });
    look = stack.look;
  });
  afterAll(() => stack.close());

  test('the token\'s commands and scripts run as that user; the gateway makes no user of its own', async () => {
    await look.set('k', 'v');
    const res = await post(stack.as(token), '/', ['eval_ro', "return redis.call('get', KEYS[1])", '1', 'k']);
    expect(res.json, show(res)).toEqual({ result: 'v' });
    const users = (await clientList(look)).filter((l) => /cmd=eval_ro/.test(l)).map((l) => /user=(\S+)/.exec(l)?.[1]);
    expect(users).toEqual(['dashboard']);
    expect(await gatewayUsers(look)).toEqual(new Map());
  });
});

describe('ACL users across replicas, restarts and a restarted Redis', () => {
  let redis: RedisProcess;
  let look: Redis;
  beforeAll(async () => {
    redis = await startRedisServer();
    look = direct(redis.url);
  });
  afterAll(async () => {
    look.disconnect();
    await redis.stop();
  });

  test('two replicas share one user (a password each); closing one leaves the other working; a restart reuses the user', async () => {
    const token = randomUUID();
    const env = { REDIS_URL: redis.url, GATEWAY_TOKEN: token, GATEWAY_TIMEOUT_MS: '3000' };
    const a = await privateGateway(env);
    const b = await privateGateway(env);
    const users = await gatewayUsers(look);
    expect([...users.values()], JSON.stringify([...users])).toEqual([2]);
    const [name] = [...users.keys()];
    await a.close();
    expect(await gatewayUsers(look)).toEqual(new Map([[name, 1]]));
    // A fresh connection (a blocking command gets its own) still authenticates for b.
    const blpop = await post(b, '/', ['blpop', 'q', '0.1']);
    expect(blpop.json, show(blpop)).toEqual({ result: null });
    await b.close();
    expect(await gatewayUsers(look)).toEqual(new Map([[name, 0]]));
    const c = await privateGateway(env);
    try {
      expect(await gatewayUsers(look)).toEqual(new Map([[name, 1]]));
      const ping = await post(c, '/', ['ping']);
      expect(ping.json, show(ping)).toEqual({ result: 'PONG' });
    } finally {
      await c.close();
    }
  });

  test('Redis restarts without its ACL: the gateway makes the user again, and scripts stay bound', async () => {
    const gw = await privateGateway({ REDIS_URL: redis.url, GATEWAY_TIMEOUT_MS: '3000' });
    try {
      await redis.restart();
      look.disconnect();
      look = direct(redis.url);
      await eventually(async () => {
        const res = await post(gw, '/', ['set', 'canary', 'alive']);
        expect(res.json, show(res)).toEqual({ result: 'OK' });
      }, { timeoutMs: 10_000, intervalMs: 100 });
      expect((await gatewayUsers(look)).size).toBe(1);
      refused(await post(gw, '/', ['eval', 'return redis.call("FLUSHALL")', '0']));
      expect(await look.get('canary')).toBe('alive');
      expect((await raw(gw, '/healthz', { token: null })).status).toBe(200);
    } finally {
      await gw.close();
    }
  }, 20_000);
});
