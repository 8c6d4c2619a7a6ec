/**
 * Upstreams other than one plain Redis: Sentinel (`redis+sentinel://…/<master>`) and Cluster
 * (`redis+cluster://…`), each started for real from the same redis-server binary, driven through a
 * private gateway by the real client.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ratelimit } from '@upstash/ratelimit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { freePort, startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { client, eventually, post, prefix, privateGateway, type PrivateGateway } from './helpers.ts';

const children: ChildProcess[] = [];
const dirs: string[] = [];

/** Starts redis-server with `args` in a temp dir; killed in afterAll. */
function redisServer(args: string[]): ChildProcess {
  const dir = mkdtempSync(join(tmpdir(), 'gw-topo-'));
  dirs.push(dir);
  const child = spawn('redis-server', args, { cwd: dir, stdio: 'ignore' });
  children.push(child);
  return child;
}

function cli(port: number, ...args: string[]): string {
  const r = spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`;
}

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('Sentinel upstream', () => {
  let master: RedisProcess;
  let gw: PrivateGateway;
  let sentinelPort = 0;

  beforeAll(async () => {
    master = await startRedisServer();
    sentinelPort = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'gw-sentinel-'));
    dirs.push(dir);
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(conf, `port ${sentinelPort}\nbind 127.0.0.1\nsentinel monitor edge 127.0.0.1 ${master.port} 1\n`);
    children.push(spawn('redis-server', [conf, '--sentinel'], { cwd: dir, stdio: 'ignore' }));
    await eventually(() => expect(cli(sentinelPort, 'SENTINEL', 'get-master-addr-by-name', 'edge')).toContain(String(master.port)), { timeoutMs: 10_000 });
    gw = await privateGateway({ REDIS_URL: `redis+sentinel://127.0.0.1:${sentinelPort}/edge`, GATEWAY_ALLOW_ADMIN_COMMANDS: 'true' });
  }, 20_000);
  afterAll(async () => {
    await gw?.close();
    await master?.stop();
  });

  test('commands reach the master the sentinel names', async () => {
    const p = prefix();
    const redis = client(gw);
    await redis.set(`${p}k`, 'via-sentinel');
    expect(await redis.get(`${p}k`)).toBe('via-sentinel');
    expect(cli(master.port, 'GET', `${p}k`).trim()).toBe('via-sentinel');
  });

  test('a restricted token (default policy) gets its ACL user on the master; scripts stay bound', async () => {
    const restricted = await privateGateway({ REDIS_URL: `redis+sentinel://127.0.0.1:${sentinelPort}/edge` });
    try {
      const p = prefix();
      const redis = client(restricted);
      await redis.set(`${p}k`, 'bound');
      expect(cli(master.port, 'ACL', 'USERS')).toMatch(/edge-gateway-/);
      const flush = await post(restricted, '/', ['eval', 'return redis.call("FLUSHALL")', '0']);
      expect(flush.status).toBe(400);
      expect(cli(master.port, 'GET', `${p}k`).trim()).toBe('bound');
    } finally {
      await restricted.close();
    }
  });
});

describe('Cluster upstream', () => {
  let ports: number[] = [];
  let gw: PrivateGateway;

  beforeAll(async () => {
    ports = [await freePort(), await freePort(), await freePort()];
    for (const port of ports) {
      redisServer(['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--save', '', '--appendonly', 'no']);
    }
    await eventually(() => ports.forEach((p) => expect(cli(p, 'PING')).toContain('PONG')), { timeoutMs: 10_000 });
    const created = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
    expect(created.status, created.stdout + created.stderr).toBe(0);
    // Every node must agree the cluster is up before the gateway reads its slot map.
    await eventually(() => ports.forEach((p) => expect(cli(p, 'CLUSTER', 'INFO')).toContain('cluster_state:ok')), { timeoutMs: 15_000 });
    gw = await privateGateway({ REDIS_URL: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`, GATEWAY_ALLOW_ADMIN_COMMANDS: 'true' });
  }, 40_000);
  afterAll(async () => {
    if (process.env['DEBUG_TOPO']) console.log(gw?.logs.join('\n'));
    await gw?.close();
  });

  test('a pipeline spanning slots on several nodes answers in order', async () => {
    const p = prefix();
    const redis = client(gw);
    const keys = Array.from({ length: 30 }, (_, i) => `${p}${i}`);
    const pipe = redis.pipeline();
    keys.forEach((k, i) => pipe.set(k, i));
    keys.forEach((k) => pipe.get(k));
    const out = await pipe.exec();
    expect(out.slice(30)).toEqual(keys.map((_, i) => i));
  });

  test('a transaction within one hash slot works; across slots it is a 400 naming CROSSSLOT', async () => {
    const p = prefix();
    const redis = client(gw);
    expect(await redis.multi().set(`{${p}}a`, 1).incr(`{${p}}a`).exec()).toEqual(['OK', 2]);
    const res = await post(gw, '/multi-exec', [['set', `${p}a`, 1], ['set', `${p}b`, 2], ['set', `${p}c`, 3]]);
    expect(res.status).toBe(400);
    expect(res.text).toContain('CROSSSLOT');
  });

  test('a restricted token (default policy) runs on an ACL user made on every master; scripts stay bound', async () => {
    const restricted = await privateGateway({ REDIS_URL: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}` });
    try {
      const p = prefix();
      const redis = client(restricted);
      const keys = Array.from({ length: 20 }, (_, i) => `${p}${i}`);
      await Promise.all(keys.map((k, i) => redis.set(k, i)));
      expect(await Promise.all(keys.map((k) => redis.get(k)))).toEqual(keys.map((_, i) => i));
      for (const port of ports) expect(cli(port, 'ACL', 'USERS')).toMatch(/edge-gateway-/);
      const flush = await post(restricted, '/', ['eval', 'return redis.call("FLUSHALL")', '0']);
      expect(flush.status).toBe(400);
      expect(await redis.get(keys[0] ?? '')).toBe(0);
      const rl = new Ratelimit({ redis, limiter: Ratelimit.slidingWindow(1, '10 s'), prefix: prefix() });
      expect([(await rl.limit('{user:2}')).success, (await rl.limit('{user:2}')).success]).toEqual([true, false]);
    } finally {
      await restricted.close();
    }
  });

  test('@upstash/ratelimit scripts (shebang flags rewritten) run on the cluster with a hash-tagged identifier', async () => {
    // Its sliding window touches two keys (this window, the previous one): on a Cluster they must
    // share a slot, so the identifier carries a hash tag (src/lib/ratelimit/ always adds one).
    const rl = new Ratelimit({ redis: client(gw), limiter: Ratelimit.slidingWindow(2, '10 s'), prefix: prefix() });
    const results = [];
    for (let i = 0; i < 3; i++) results.push((await rl.limit('{user:1}')).success);
    expect(results).toEqual([true, true, false]);
  });
});
