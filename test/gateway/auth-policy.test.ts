/**
 * Command policy: the default deny of server administration, per-token read-only / allow / deny
 * lists from a tokens file (ours and SRH's shape), SRH's environment names, commands that would
 * change a pooled connection, and blocking commands.
 *
 * Admin commands are sent in forms Redis rejects anyway (`FLUSHALL not-a-mode`), so a gateway that
 * wrongly let them through fails the test without harming the shared Redis.
 */
import { createHash, randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import {
  client, errorOf, openSse, post, prefix, privateGateway, raw, redisUrl, shared, show, tokensFile,
  type PrivateGateway, type Target,
} from './helpers.ts';

/** Harmless if they ever reached Redis: each is a syntax error or read-only there. */
const ADMIN_COMMANDS: readonly (readonly string[])[] = [
  ['flushall', 'not-a-mode'],
  ['FLUSHDB', 'not-a-mode'],
  ['config', 'get', 'maxmemory'],
  ['debug', 'not-a-subcommand'],
  ['shutdown', 'not-an-option'],
  ['replicaof', 'no-such-host.invalid', 'not-a-port'],
  ['slaveof', 'no-such-host.invalid', 'not-a-port'],
  ['module', 'list'],
  ['acl', 'list'],
  ['script', 'kill'],
  ['client', 'list'],
];

function expect403(res: Awaited<ReturnType<typeof post>>): void {
  expect(res.status, show(res)).toBe(403);
  expect(errorOf(res), show(res)).toBeTypeOf('string');
}

describe('default policy (GATEWAY_ALLOW_ADMIN_COMMANDS unset)', () => {
  let gw: PrivateGateway;
  beforeAll(async () => {
    gw = await privateGateway();
  });
  afterAll(async () => {
    await gw.close();
  });

  test.each(ADMIN_COMMANDS.map((c) => ({ cmd: c, name: c.slice(0, 2).join(' ') })))('$name → 403 on /, /pipeline, /multi-exec and the path form', async ({ cmd }) => {
    const k = `${prefix()}k`;
    expect403(await post(gw, '/', cmd));
    // A refused command refuses its whole batch: the SET before it never runs.
    expect403(await post(gw, '/pipeline', [['set', k, 'v'], cmd]));
    expect403(await post(gw, '/multi-exec', [['set', k, 'v'], cmd]));
    expect403(await raw(gw, `/${cmd.map(encodeURIComponent).join('/')}`));
    const check = await post(gw, '/', ['exists', k]);
    expect(check.json, show(check)).toEqual({ result: 0 });
  });

  test('the client sees the refusal as an error', async () => {
    const redis = client(gw, { autoPipelining: false });
    await expect(redis.exec(['flushall', 'not-a-mode'])).rejects.toThrow();
    await expect(redis.exec(['config', 'get', 'maxmemory'])).rejects.toThrow();
  });

  test('ordinary commands, scripts and SCRIPT LOAD / EXISTS stay allowed', async () => {
    const redis = client(gw);
    const k = `${prefix()}k`;
    expect(await redis.set(k, 'v')).toBe('OK');
    expect(await redis.eval('return redis.call("get", KEYS[1])', [k], [])).toBe('v');
    const script = `return "${randomUUID()}"`;
    const sha = createHash('sha1').update(script).digest('hex');
    expect(await redis.multi().scriptLoad(script).scriptExists(sha).exec()).toEqual([sha, [1]]);
  });
});

describe('GATEWAY_ALLOW_ADMIN_COMMANDS=true (the shared test gateway)', () => {
  test('CONFIG GET works', async () => {
    const res = await post(shared(), '/', ['config', 'get', 'maxmemory']);
    expect(res.status, show(res)).toBe(200);
    expect(res.json).toEqual({ result: ['maxmemory', expect.stringMatching(/^\d+$/)] });
  });
});

describe('commands that would change a pooled connection are refused with 400 (admin allowed)', () => {
  // A private gateway per command: if one slipped through, only that gateway's connection is harmed
  // and the next command's verdict is its own.
  let gw: PrivateGateway;
  beforeEach(async () => {
    gw = await privateGateway({ GATEWAY_ALLOW_ADMIN_COMMANDS: 'true' });
  });
  afterEach(async () => {
    await gw.close();
  });

  test.each([
    { cmd: ['select', '1'], name: 'SELECT' },
    { cmd: ['subscribe', 'some-channel'], name: 'SUBSCRIBE' },
    { cmd: ['psubscribe', 'some-*'], name: 'PSUBSCRIBE' },
    { cmd: ['multi'], name: 'MULTI' },
    { cmd: ['exec'], name: 'EXEC' },
    { cmd: ['discard'], name: 'DISCARD' },
    { cmd: ['watch', 'some-key'], name: 'WATCH' },
    { cmd: ['monitor'], name: 'MONITOR' },
    { cmd: ['client', 'reply', 'off'], name: 'CLIENT REPLY' },
    { cmd: ['hello', '3'], name: 'HELLO' },
    { cmd: ['auth', 'someone', 'secret'], name: 'AUTH' },
    { cmd: ['reset'], name: 'RESET' },
  ])('$name → 400 with a message naming it, and the connection is unharmed', async ({ cmd, name }) => {
    const k = `${prefix()}k`;
    const res = await post(gw, '/', cmd);
    expect(res.status, show(res)).toBe(400);
    expect(errorOf(res) ?? '', show(res)).toContain(name);
    const piped = await post(gw, '/pipeline', [['set', k, 'v'], cmd]);
    expect(piped.status, show(piped)).toBe(400);
    // Still database 0, still answering normally: what the shared gateway wrote is visible here.
    await post(shared(), '/', ['set', k, 'from-shared']);
    const after = await post(gw, '/pipeline', [['get', k], ['ping']]);
    expect(after.json, show(after)).toEqual([{ result: 'from-shared' }, { result: 'PONG' }]);
  });
});

describe('blocking commands run on their own connection, with a timeout shorter than the deadline', () => {
  let gw: PrivateGateway;
  beforeAll(async () => {
    gw = await privateGateway({ GATEWAY_TIMEOUT_MS: '3000' });
  });
  afterAll(async () => {
    await gw.close();
  });

  test('BLPOP with a short timeout on an empty list answers null', async () => {
    const res = await post(gw, '/', ['blpop', `${prefix()}empty`, '0.2']);
    expect(res.status, show(res)).toBe(200);
    expect(res.json).toEqual({ result: null });
  });

  test('BLPOP receives what another request pushes, while other requests keep flowing', async () => {
    const k = `${prefix()}queue`;
    let blpopDone = false;
    const waiting = post(gw, '/', ['blpop', k, '2']).finally(() => {
      blpopDone = true;
    });
    // The shared connection is not blocked: these answer while BLPOP still waits.
    const ping = await post(gw, '/pipeline', [['ping'], ['exists', k]]);
    expect(ping.json, show(ping)).toEqual([{ result: 'PONG' }, { result: 0 }]);
    expect(blpopDone).toBe(false);
    const push = await post(gw, '/', ['rpush', k, 'job-1']);
    expect(push.json, show(push)).toEqual({ result: 1 });
    const got = await waiting;
    expect(got.json, show(got)).toEqual({ result: [k, 'job-1'] });
  });

  test('timeout 0, or one not shorter than GATEWAY_TIMEOUT_MS, is refused with 400', async () => {
    const k = `${prefix()}k`;
    for (const cmd of [['blpop', k, '0'], ['brpop', k, '5'], ['xread', 'block', '0', 'streams', k, '$'], ['bzpopmin', k, '3']]) {
      const res = await post(gw, '/', cmd);
      expect(res.status, show(res)).toBe(400);
      expect(errorOf(res), show(res)).toBeTypeOf('string');
    }
  });

  test('XREADGROUP with a short BLOCK answers null when nothing arrives', async () => {
    const s = `${prefix()}stream`;
    await post(gw, '/', ['xgroup', 'create', s, 'g', '$', 'mkstream']);
    const res = await post(gw, '/', ['xreadgroup', 'group', 'g', 'c', 'block', '100', 'streams', s, '>']);
    expect(res.json, show(res)).toEqual({ result: null });
  });
});

describe('tokens file, our shape: read-only, allow-list, deny-list, another database', () => {
  const t = { rw: randomUUID(), ro: randomUUID(), allow: randomUUID(), deny: randomUUID(), db1: randomUUID() };
  let gw: PrivateGateway;
  let file: ReturnType<typeof tokensFile>;
  const as = (token: string): Target => ({ url: gw.url, token });

  beforeAll(async () => {
    const db1 = new URL(redisUrl());
    db1.pathname = '/1';
    file = tokensFile({
      tokens: [
        { name: 'rw', token: t.rw, redisUrl: redisUrl() },
        { name: 'ro', token: t.ro, redisUrl: redisUrl(), readonly: true },
        { name: 'allow', token: t.allow, redisUrl: redisUrl(), allow: ['GET', 'SET', 'SCRIPT LOAD'] },
        { name: 'deny', token: t.deny, redisUrl: redisUrl(), deny: ['DEL', 'SCRIPT FLUSH'] },
        { name: 'db1', token: t.db1, redisUrl: db1.href },
      ],
    });
    gw = await privateGateway({ GATEWAY_TOKEN: '', GATEWAY_TOKENS_FILE: file.path });
  });
  afterAll(async () => {
    await gw.close();
    file.remove();
  });

  test('a token that is not in the file → 401', async () => {
    const res = await post(as(randomUUID()), '/', ['ping']);
    expect(res.status, show(res)).toBe(401);
  });

  test('read-only: reads work, writes → 403 and change nothing', async () => {
    const k = `${prefix()}k`;
    await post(as(t.rw), '/', ['hset', k, 'f', 'v']);
    const ro = client(as(t.ro));
    expect(await ro.hgetall(k)).toEqual({ f: 'v' });
    expect(await ro.exists(k)).toBe(1);
    expect(await ro.ping()).toBe('PONG');
    expect(await ro.evalRo('return redis.call("hget", KEYS[1], "f")', [k], [])).toBe('v');
    for (const cmd of [['set', k, 'x'], ['hset', k, 'f', 'w'], ['del', k], ['incr', `${k}:n`], ['eval', 'return 1', '0'], ['publish', 'c', 'm']]) {
      expect403(await post(as(t.ro), '/', cmd));
    }
    expect403(await post(as(t.ro), '/pipeline', [['hget', k, 'f'], ['hset', k, 'f', 'w']]));
    expect403(await post(as(t.ro), '/multi-exec', [['hset', k, 'f', 'w']]));
    await expect(ro.set(k, 'x')).rejects.toThrow();
    // Redis itself still refuses a write inside a read-only script.
    const sneaky = await post(as(t.ro), '/', ['eval_ro', 'return redis.call("set", KEYS[1], "x")', '1', k]);
    expect(sneaky.status, show(sneaky)).toBe(400);
    expect(await client(as(t.rw)).hget(k, 'f')).toBe('v');
  });

  test('read-only tokens may subscribe', async () => {
    const channel = `${prefix()}ch`;
    const stream = await openSse(as(t.ro), `/subscribe/${channel}`);
    try {
      expect(stream.status).toBe(200);
      await stream.waitForLine(`data: subscribe,${channel},1`);
    } finally {
      stream.close();
    }
  });

  test('allow-list: listed commands (and subcommands) only', async () => {
    const k = `${prefix()}k`;
    const allowed = client(as(t.allow), { autoPipelining: false });
    expect(await allowed.set(k, 'v')).toBe('OK');
    expect(await allowed.get(k)).toBe('v');
    expect(await allowed.scriptLoad(`return "${randomUUID()}"`)).toMatch(/^[0-9a-f]{40}$/);
    expect403(await post(as(t.allow), '/', ['del', k]));
    expect403(await post(as(t.allow), '/', ['script', 'exists', '0'.repeat(40)]));
    expect403(await post(as(t.allow), '/pipeline', [['get', k], ['incr', `${k}:n`]]));
    expect(await allowed.get(k)).toBe('v');
  });

  test('deny-list: listed commands refused, everything else allowed', async () => {
    const k = `${prefix()}k`;
    const denied = client(as(t.deny), { autoPipelining: false });
    expect(await denied.set(k, 'v')).toBe('OK');
    expect(await denied.incr(`${k}:n`)).toBe(1);
    expect(await denied.scriptExists('0'.repeat(40))).toEqual([0]);
    expect403(await post(as(t.deny), '/', ['del', k]));
    expect403(await post(as(t.deny), '/', ['DEL', k]));
    expect403(await post(as(t.deny), '/', ['script', 'flush', 'not-a-mode']));
    expect(await denied.get(k)).toBe('v');
  });

  test('a token bound to database 1 reads and writes there, not in database 0', async () => {
    const k = `${prefix()}k`;
    const one = client(as(t.db1), { autoPipelining: false });
    const zero = client(as(t.rw), { autoPipelining: false });
    try {
      expect(await one.set(k, 'in-db1')).toBe('OK');
      expect(await one.get(k)).toBe('in-db1');
      expect(await zero.get(k)).toBeNull();
    } finally {
      await one.del(k);
    }
  });
});

describe('SRH compatibility', () => {
  test('an SRH tokens file { "<token>": { srh_id, connection_string, max_connections } }', async () => {
    const token = randomUUID();
    const file = tokensFile({ [token]: { srh_id: 'legacy', connection_string: redisUrl(), max_connections: 3 } });
    const gw = await privateGateway({ GATEWAY_TOKEN: '', GATEWAY_TOKENS_FILE: file.path });
    try {
      const redis = client({ url: gw.url, token });
      const k = `${prefix()}k`;
      expect(await redis.set(k, { srh: true })).toBe('OK');
      expect(await redis.get(k)).toEqual({ srh: true });
      const res = await post({ url: gw.url, token: 'other' }, '/', ['ping']);
      expect(res.status, show(res)).toBe(401);
    } finally {
      await gw.close();
      file.remove();
    }
  });

  test('SRH_MODE=env with SRH_TOKEN and SRH_CONNECTION_STRING', async () => {
    const token = randomUUID();
    const gw = await privateGateway({ GATEWAY_TOKEN: '', REDIS_URL: '', SRH_MODE: 'env', SRH_TOKEN: token, SRH_CONNECTION_STRING: redisUrl() });
    try {
      const redis = client({ url: gw.url, token }, { autoPipelining: false });
      const k = `${prefix()}k`;
      expect(await redis.set(k, 'v')).toBe('OK');
      expect(await client(shared()).get(k)).toBe('v');
    } finally {
      await gw.close();
    }
  });
});
