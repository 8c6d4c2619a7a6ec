/**
 * Property-based fuzz (fast-check) of the request parser and the policy:
 * - in-process: random bodies through the parser, random command mixes through the compiled
 *   policy of a default token: only RequestErrors come out, and nothing on the must-refuse list
 *   (named in any case, with any subcommand spelling) is ever let through;
 * - over HTTP: random routes, paths, methods, headers, bodies and command mixes sent to a real
 *   gateway with two tokens, each on a private Redis of its own (a read-only one; one with the
 *   default policy and a deny list). The gateway never crashes, always answers JSON (never 500),
 *   and afterwards Redis's own counters (INFO commandstats) show that no refused command ran, and
 *   a canary in another database is untouched.
 * The run counts are FUZZ_PARSER_RUNS / FUZZ_HTTP_RUNS (defaults below); fast-check prints the seed
 * of a failing run, which reproduces it with `seed`.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { checkCommands, parseBatch, parseSingle, RequestError, type Command } from '../../gateway/commands.ts';
import { aclName, leaves, parseCommandTable, versionOf, type CommandTable } from '../../gateway/command-table.ts';
import { asciiUpper, compilePolicy } from '../../gateway/policy.ts';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { privateGateway, raw, redisUrl, tokensFile, type PrivateGateway } from './helpers.ts';
import { calls, direct } from './processes.ts';

const PARSER_RUNS = Number(process.env['FUZZ_PARSER_RUNS'] ?? 3_000);
const HTTP_RUNS = Number(process.env['FUZZ_HTTP_RUNS'] ?? 600);

/** Refused for a default-policy token whatever the spelling: an oracle apart from policy.ts. */
const MUST_REFUSE = new Set([
  'FLUSHALL', 'FLUSHDB', 'SWAPDB', 'MOVE', 'DEBUG', 'REPLCONF', 'SHUTDOWN', 'MONITOR', 'SYNC', 'PSYNC', 'MIGRATE',
  'RESTORE', 'SAVE', 'BGSAVE', 'REPLICAOF', 'SLAVEOF', 'FAILOVER', 'SELECT', 'MULTI', 'EXEC', 'SUBSCRIBE', 'HELLO', 'AUTH',
  'CONFIG GET', 'CONFIG SET', 'SCRIPT DEBUG', 'SCRIPT FLUSH', 'SCRIPT KILL', 'SLOWLOG GET', 'CLIENT LIST', 'CLIENT KILL',
  'CLIENT PAUSE', 'CLIENT REPLY', 'FUNCTION LOAD', 'FUNCTION FLUSH', 'ACL SETUSER', 'ACL LIST', 'MODULE LOAD',
]);

const SCRIPTS = [
  "return redis.call('flushall')",
  "return redis.call('del', KEYS[1])",
  "redis.call('select', 1) return redis.call('get', 'canary')",
  "return redis.call('copy', 'k', 'canary', 'db', 1, 'replace')",
  "return redis.call('swapdb', 0, 1)",
  "return redis.call('config', 'set', 'maxmemory', '1')",
  "return redis.call('set', KEYS[1], 'x')",
  'return 1',
];

const NAMES = [
  'get', 'set', 'del', 'unlink', 'flushall', 'FlushDB', 'swapdb', 'move', 'copy', 'config', 'debug', 'replconf', 'script',
  'function', 'eval', 'EVAL_RO', 'evalsha', 'fcall', 'select', 'multi', 'exec', 'subscribe', 'blpop', 'xread', 'info',
  'slowlog', 'client', 'keys', 'sort', 'hset', 'incr', 'ping', 'echo', 'time', 'fluſhall', 'shutdown', 'acl', 'wait',
];
const ARGS = [
  'get', 'set', 'debug', 'sync', 'yes', 'ack', 'getack', '0', '1', '-1', '0.05', '1e-9', 'inf', '0x10', ' 1', 'k', 'canary',
  'db', 'DB', 'block', 'BLOCK', 'streams', '$', 'load', 'flush', 'kill', 'list', 'pause', 'reply', 'off', 'nosave', 'maxmemory',
  '..', '%2e', '', 'ſ', '😀', ...SCRIPTS,
];

const arg = fc.oneof(
  { weight: 20, arbitrary: fc.constantFrom(...ARGS) },
  { weight: 3, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.integer({ min: -5, max: 100_000 }) },
  { weight: 1, arbitrary: fc.double() },
  { weight: 1, arbitrary: fc.boolean() },
  { weight: 1, arbitrary: fc.constantFrom(null, [1], { a: 1 }) },
);
const command = fc.tuple(fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...NAMES) }, { weight: 1, arbitrary: fc.string({ maxLength: 10 }) }), fc.array(arg, { maxLength: 6 }))
  .map(([name, args]) => [name, ...args]);
const batch = fc.array(command, { minLength: 0, maxLength: 6 });

let table: CommandTable;
let look: Redis;
beforeAll(async () => {
  look = direct(redisUrl());
  table = parseCommandTable(await look.call('COMMAND'), versionOf(String(await look.call('INFO', 'server'))));
  look.disconnect();
});

describe('fuzz, in process: the parser and the compiled policy', () => {
  test(`random bodies and command mixes (${PARSER_RUNS} runs): only RequestErrors, and nothing that must be refused passes`, () => {
    const policy = compilePolicy(table, { name: 'f', token: 'f', redisUrl: 'redis://x', readonly: false }, { allowAdminCommands: false, db: 0 }, 'acl');
    const body = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s)),
      fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? '')),
      batch.map((b) => Buffer.from(JSON.stringify(b))),
      command.map((c) => Buffer.from(JSON.stringify(c))),
    );
    fc.assert(fc.property(body, fc.constantFrom<'plain' | 'transaction'>('plain', 'transaction'), (bytes, mode) => {
      let cmds: Command[];
      try {
        cmds = bytes[0] === 0x5b && bytes[1] === 0x5b ? parseBatch(bytes, 100) : [parseSingle(bytes)];
      } catch (err) {
        expect(err).toBeInstanceOf(RequestError);
        return;
      }
      try {
        checkCommands(cmds, policy, 30_000, mode);
      } catch (err) {
        expect(err).toBeInstanceOf(RequestError);
        expect([400, 403]).toContain((err as RequestError).status);
        return;
      }
      for (const c of cmds) {
        const sub = c.args[0] ? asciiUpper(c.args[0].toString('latin1')) : '';
        expect(MUST_REFUSE.has(c.name) || MUST_REFUSE.has(`${c.name} ${sub}`), `${c.name} ${sub} passed`).toBe(false);
      }
    }), { numRuns: PARSER_RUNS });
  });
});

describe('fuzz, over HTTP: a real gateway, two private Redis servers', () => {
  const t = { ro: randomUUID(), nodel: randomUUID() };
  let roRedis: RedisProcess;
  let rwRedis: RedisProcess;
  let ro: Redis;
  let rw: Redis;
  let gw: PrivateGateway;
  let file: ReturnType<typeof tokensFile>;

  beforeAll(async () => {
    [roRedis, rwRedis] = await Promise.all([startRedisServer(), startRedisServer()]);
    ro = direct(roRedis.url);
    rw = direct(rwRedis.url);
    for (const r of [ro, rw]) {
      await r.set('k', 'v');
      await r.select(1);
      await r.set('canary', 'db1');
      await r.select(0);
      await r.config('RESETSTAT');
    }
    file = tokensFile({
      tokens: [
        { name: 'ro', token: t.ro, redisUrl: roRedis.url, readonly: true },
        { name: 'nodel', token: t.nodel, redisUrl: rwRedis.url, deny: ['DEL', 'UNLINK'] },
      ],
    });
    gw = await privateGateway({
      REDIS_URL: rwRedis.url, GATEWAY_TOKEN: '', GATEWAY_TOKENS_FILE: file.path, GATEWAY_BASE_PATH: '/r',
      GATEWAY_TIMEOUT_MS: '500', GATEWAY_MAX_BODY_BYTES: '4096',
    });
  }, 20_000);
  afterAll(async () => {
    ro.disconnect();
    rw.disconnect();
    await gw.close();
    await Promise.all([roRedis.stop(), rwRedis.stop()]);
    file.remove();
  });

  test(`random requests (${HTTP_RUNS} runs): JSON answers only, never a 500, and Redis ran nothing refused`, async () => {
    const root = () => gw.url.replace(/\/r$/, '');
    const segment = fc.oneof(fc.constantFrom('get', 'set', 'flushall', 'k', '..', '.', '%2e%2e', '%', '%zz', '%00', 'r', 'pipeline', 'multi-exec', 'subscribe', ''), fc.string({ maxLength: 8 }).map(encodeURIComponent));
    const chaos = fc.record({
      path: fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom('/r', '/r/', '/r/pipeline', '/r/multi-exec') },
        { weight: 1, arbitrary: fc.constantFrom('/pipeline', '/', '/r/healthz', '/r/metrics') },
        { weight: 3, arbitrary: fc.array(segment, { maxLength: 5 }).map((s) => `/r/${s.join('/')}`) },
        { weight: 1, arbitrary: fc.array(segment, { maxLength: 4 }).map((s) => `/${s.join('/')}`) },
      ),
      method: fc.oneof({ weight: 8, arbitrary: fc.constant('POST') }, { weight: 1, arbitrary: fc.constantFrom('GET', 'PUT', 'DELETE') }),
      token: fc.oneof({ weight: 8, arbitrary: fc.constantFrom<string | null>(t.ro, t.nodel) }, { weight: 1, arbitrary: fc.constantFrom<string | null>('wrong', null) }),
      base64: fc.boolean(),
      headers: fc.dictionary(fc.constantFrom('content-type', 'upstash-encoding', 'x-junk', 'upstash-sync-token'), fc.string({ unit: 'grapheme-ascii', maxLength: 20 }), { maxKeys: 2 }),
      body: fc.oneof(
        { weight: 5, arbitrary: batch.map((b) => JSON.stringify(b)) },
        { weight: 4, arbitrary: command.map((c) => JSON.stringify(c)) },
        { weight: 1, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v) ?? '') },
        { weight: 1, arbitrary: fc.string({ maxLength: 100 }) },
        { weight: 1, arbitrary: fc.constant<string | undefined>(undefined) },
      ),
    });
    // Well-formed requests with random command mixes: what reaches the policy and Redis.
    const wellFormed = fc.record({
      path: fc.constantFrom('/r/', '/r/pipeline', '/r/multi-exec'),
      method: fc.constant('POST'),
      token: fc.constantFrom<string | null>(t.ro, t.nodel),
      base64: fc.boolean(),
      headers: fc.constant<Record<string, string>>({}),
      cmds: fc.array(command, { minLength: 1, maxLength: 3 }),
    }).map(({ cmds, ...r }) => ({ ...r, body: r.path === '/r/' ? JSON.stringify(cmds[0]) : JSON.stringify(cmds) as string | undefined }));
    const request = fc.oneof({ weight: 2, arbitrary: wellFormed }, { weight: 1, arbitrary: chaos });
    let answered = 0;
    const statuses = new Map<number, number>();
    await fc.assert(fc.asyncProperty(request, async (r) => {
      const method = r.body === undefined && r.method === 'POST' ? 'GET' : r.method;
      const headers: Record<string, string> = { ...r.headers };
      if (r.token !== null) headers['authorization'] = `Bearer ${r.token}`;
      if (r.base64) headers['upstash-encoding'] = 'base64';
      const res = await fetch(`${root()}${r.path}`, {
        method, headers, signal: AbortSignal.timeout(5_000),
        ...(r.body !== undefined && method !== 'GET' ? { body: r.body } : {}),
      });
      answered++;
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const type = res.headers.get('content-type') ?? '';
      const what = `${method} ${r.path} ${r.body ?? ''}: ${res.status}`;
      if (type.startsWith('text/event-stream')) {
        // A subscription the fuzz opened: it answered 200 with a stream; close it.
        expect(res.status, what).toBe(200);
        await res.body?.cancel();
        return;
      }
      const text = await res.text();
      expect(res.status, `${what} ${text}`).not.toBe(500);
      if (r.path === '/r/metrics' && method === 'GET') return;
      expect(type, `${what} ${text}`).toMatch(/^application\/json/);
      if (res.status !== 204) expect(() => JSON.parse(text) as unknown, `${what} ${text}`).not.toThrow();
    }), { numRuns: HTTP_RUNS });
    expect(answered).toBe(HTTP_RUNS);
    if (process.env['FUZZ_STATS']) process.stdout.write(`fuzz: ${answered} requests, by status: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}\n`);

    // Still serving, for both tokens.
    for (const token of [t.ro, t.nodel]) expect((await raw({ url: gw.url, token }, '/ping')).json).toEqual({ result: 'PONG' });
    // The read-only token's Redis ran no write at all.
    for (const e of leaves(table)) {
      if (e.flags.has('write')) expect(await calls(ro, aclName(e.name)), `${e.name} ran on the read-only token's Redis`).toBe(0);
    }
    // The other ran nothing denied to it (DEL and UNLINK by its list, the rest by default).
    for (const name of ['del', 'unlink', 'flushall', 'flushdb', 'swapdb', 'move', 'replconf', 'script|debug', 'script|flush', 'config|set', 'config|get', 'debug', 'shutdown', 'slowlog|get', 'client|list', 'client|kill', 'client|pause', 'migrate', 'restore', 'function|load', 'select']) {
      expect(await calls(rw, name), `${name} ran on the default token's Redis`).toBe(0);
    }
    for (const r of [ro, rw]) {
      await r.select(1);
      expect(await r.get('canary')).toBe('db1');
      await r.select(0);
    }
  }, 120_000);
});
