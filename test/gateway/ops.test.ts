/**
 * The operable gateway (issue 11 item 4): prom-client's process metrics beside ours on /metrics,
 * JSON log lines with a request id, the `x-request-id` header, `/readyz`, and config refused with
 * one-line errors. Against real Redis processes and real gateways.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { currentBlock, ENDPOINTS_BEGIN, ENDPOINTS_END, renderEndpoints } from '../../gateway/command-docs.ts';
import { ConfigError, loadConfig } from '../../gateway/config.ts';
import { startRedisServer } from '../support/redis-process.ts';
import { eventually, metric, openSse, post, prefix, privateGateway, raw, redisUrl, scrape, tokensFile, type PrivateGateway } from './helpers.ts';

let gw: PrivateGateway;
beforeAll(async () => {
  gw = await privateGateway();
});
afterAll(async () => {
  await gw.close();
});

describe('/metrics', () => {
  test("has prom-client's default process metrics and the gateway's own families", async () => {
    await post(gw, '/', ['ping']);
    const text = await scrape(gw);
    expect(metric(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(text).toMatch(/^# TYPE nodejs_eventloop_lag_seconds gauge$/m);
    expect(text).toMatch(/^nodejs_gc_duration_seconds_count|^# TYPE nodejs_gc_duration_seconds histogram$/m);
    expect(text).toMatch(/^# TYPE nodejs_active_handles(_total)? gauge$/m);
    expect(metric(text, 'gateway_http_requests_total', { route: '/', status: '200' })).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'gateway_commands_total', { command: 'ping' })).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'gateway_redis_up')).toBe(1);
    expect(text).toMatch(/^# TYPE gateway_request_duration_seconds histogram$/m);
  });

  test('two gateways in one process keep their counts apart', async () => {
    const other = await privateGateway();
    try {
      const before = metric(await scrape(gw), 'gateway_http_requests_total', { route: '/pipeline', status: '200' });
      await post(other, '/pipeline', [['ping']]);
      expect(metric(await scrape(other), 'gateway_http_requests_total', { route: '/pipeline', status: '200' })).toBe(1);
      expect(metric(await scrape(gw), 'gateway_http_requests_total', { route: '/pipeline', status: '200' })).toBe(before);
    } finally {
      await other.close();
    }
  });
});

describe('configuration (zod schemas)', () => {
  const message = (env: Record<string, string>) => {
    try {
      loadConfig({ REDIS_URL: redisUrl(), GATEWAY_TOKEN: 't', ...env });
      return 'no error';
    } catch (err) {
      return err instanceof ConfigError ? err.message : `not a ConfigError: ${String(err)}`;
    }
  };

  test('bad values are refused with one line naming the variable', () => {
    expect(message({ GATEWAY_PORT: 'eighty' })).toBe('GATEWAY_PORT must be a whole number, got "eighty"');
    expect(message({ SRH_PORT: '70000' })).toBe('SRH_PORT must be between 0 and 65535, got 70000');
    expect(message({ GATEWAY_ALLOW_ADMIN_COMMANDS: 'maybe' })).toBe('GATEWAY_ALLOW_ADMIN_COMMANDS must be true or false, got "maybe"');
    expect(message({ SRH_MODE: 'weird' })).toBe('SRH_MODE must be "env" or "file", got "weird"');
    expect(message({ GATEWAY_BASE_PATH: 'redis' })).toBe('GATEWAY_BASE_PATH must look like /prefix, got "redis"');
    expect(message({ GATEWAY_TOKEN: 'a b' })).toBe('GATEWAY_TOKEN: token must not contain whitespace');
    expect(message({ GATEWAY_WORKERS: '0' })).toBe('GATEWAY_WORKERS must be a whole number from 1 to 256, or auto, got "0"');
    expect(message({ GATEWAY_LOG_LEVEL: 'loud' })).toBe('GATEWAY_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"');
    expect(message({ REDIS_URL: 'http://x' })).toMatch(/^REDIS_URL must look like redis:\/\/\[:password@\]host:port/);
    for (const env of [{ GATEWAY_PORT: 'x' }, { GATEWAY_LOG_LEVEL: 'x' }, { GATEWAY_WORKERS: 'x' }]) expect(message(env)).not.toMatch(/\n/);
  });

  test('tokens-file entries are refused with where they are', () => {
    const cases: [unknown, string][] = [
      [{ tokens: [{ token: 'a', readonly: 'yes' }] }, 'tokens[0].readonly must be true or false'],
      [{ tokens: [{ token: 'a', allow: 'GET' }] }, 'tokens[0].allow must be an array of command names like ["GET", "SCRIPT LOAD"]'],
      [{ tokens: [{ token: 'a', redisPassword: 'x' }] }, 'tokens[0].redisPassword needs tokens file'],
      [{ tok: { connection_string: 3 } }, 'entry 0 must be {"srh_id", "connection_string", "max_connections"} (SRH shape)'],
    ];
    for (const [doc, part] of cases) {
      const file = tokensFile(doc);
      try {
        expect(message({ GATEWAY_TOKEN: '', GATEWAY_TOKENS_FILE: file.path })).toContain(part);
      } finally {
        file.remove();
      }
    }
  });

  test('defaults, aliases and the log level', () => {
    const c = loadConfig({ SRH_TOKEN: ' s ', SRH_MAX_CONNECTIONS: '7', GATEWAY_LOG_LEVEL: 'DEBUG', GATEWAY_LOG_REQUESTS: 'yes' });
    expect(c).toMatchObject({ port: 8079, host: '127.0.0.1', maxDedicatedConnections: 7, logLevel: 'debug', logRequests: true, workers: 1 });
    expect(c.tokens).toEqual([{ name: 'default', token: 's', redisUrl: 'redis://127.0.0.1:6379', readonly: false }]);
    expect(loadConfig({ GATEWAY_TOKEN: 't' }).logLevel).toBe('info');
  });
});

/** The log lines as objects; every line must be JSON. */
function parsed(lines: string[]): Record<string, unknown>[] {
  return lines.map((line) => {
    const v: unknown = JSON.parse(line);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`not a JSON object: ${line}`);
    return Object.fromEntries(Object.entries(v));
  });
}

describe('request ids', () => {
  test('a sane incoming x-request-id is echoed, on answers and errors alike', async () => {
    const id = `req-${randomUUID()}:1.a_b`;
    const ok = await post(gw, '/', ['ping'], { headers: { 'x-request-id': id } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('x-request-id')).toBe(id);
    const denied = await post(gw, '/', ['ping'], { token: 'wrong', headers: { 'x-request-id': id } });
    expect(denied.status).toBe(401);
    expect(denied.headers.get('x-request-id')).toBe(id);
    const notFound = await raw(gw, '/healthz/nope', { method: 'DELETE', headers: { 'x-request-id': id } });
    expect(notFound.headers.get('x-request-id')).toBe(id);
    expect(ok.headers.get('access-control-expose-headers')).toContain('x-request-id');
  });

  test('a missing or insane one is replaced by a fresh id, different per request', async () => {
    const fresh = /^[0-9a-f]{8}-[0-9a-z]+$/;
    const a = (await post(gw, '/', ['ping'])).headers.get('x-request-id') ?? '';
    const b = (await post(gw, '/', ['ping'])).headers.get('x-request-id') ?? '';
    expect(a).toMatch(fresh);
    expect(b).toMatch(fresh);
    expect(a).not.toBe(b);
    for (const bad of ['x'.repeat(129), 'has space', 'semi;colon', 'a/b', 'a,b']) {
      const res = await post(gw, '/', ['ping'], { headers: { 'x-request-id': bad } });
      expect(res.headers.get('x-request-id')).toMatch(fresh);
    }
  });

  test('SSE streams carry it too', async () => {
    const stream = await openSse(gw, `/subscribe/${prefix()}ch`);
    try {
      expect(stream.headers.get('x-request-id')).toMatch(/^[0-9a-f]{8}-[0-9a-z]+$/);
    } finally {
      stream.close();
    }
  });
});

describe('JSON logs', () => {
  test('access lines at debug carry level, msg, reqId, route and status; never the token, arguments or Authorization', async () => {
    const token = `tok-${randomUUID()}`;
    const secretArg = `arg-${randomUUID()}`;
    const g = await privateGateway({ GATEWAY_TOKEN: token, GATEWAY_LOG_LEVEL: 'debug' });
    try {
      const id = `trace-${randomUUID()}`;
      await post(g, '/', ['set', `${prefix()}k`, secretArg], { headers: { 'x-request-id': id } });
      await post(g, '/', ['ping'], { token: `${token}-wrong` });
      await post(g, '/', ['get', secretArg, 'extra', 'args']);
      await raw(g, `/get/${secretArg}?_token=${token}`);
      await eventually(() => expect(g.logs.some((l) => l.includes(id))).toBe(true));
      const lines = parsed(g.logs);
      const access = lines.find((l) => l['reqId'] === id);
      expect(access).toMatchObject({ level: 'debug', msg: 'request', reqId: id, route: '/', status: 200, method: 'POST' });
      expect(typeof access?.['time']).toBe('string');
      expect(lines.filter((l) => l['msg'] === 'request').map((l) => l['status'])).toEqual(expect.arrayContaining([200, 401, 400]));
      for (const l of lines) expect(typeof l['level'] === 'string' && typeof l['msg'] === 'string').toBe(true);
      const all = g.logs.join('\n');
      expect(all).not.toContain(token);
      expect(all).not.toContain(secretArg);
      expect(all.toLowerCase()).not.toContain('bearer');
    } finally {
      await g.close();
    }
  });

  test('at the default level (info) there is no access line; GATEWAY_LOG_REQUESTS=true logs it at info', async () => {
    const quiet = await privateGateway();
    const loud = await privateGateway({ GATEWAY_LOG_REQUESTS: 'true' });
    try {
      const id = `q-${randomUUID()}`;
      await post(quiet, '/', ['ping'], { headers: { 'x-request-id': id } });
      await post(loud, '/', ['ping'], { headers: { 'x-request-id': id } });
      await eventually(() => expect(loud.logs.some((l) => l.includes(id))).toBe(true));
      expect(parsed(loud.logs).find((l) => l['reqId'] === id)).toMatchObject({ level: 'info', msg: 'request', status: 200 });
      expect(quiet.logs.some((l) => l.includes(id))).toBe(false);
    } finally {
      await quiet.close();
      await loud.close();
    }
  });
});

describe('/readyz', () => {
  test('200 while Redis answers, 503 JSON once the Redis process is stopped, 200 again after it restarts; /healthz stays', async () => {
    const redis = await startRedisServer();
    const g = await privateGateway({ REDIS_URL: redis.url });
    try {
      const ready = await raw(g, '/readyz', { token: null });
      expect(ready.status).toBe(200);
      expect(ready.json).toEqual({ status: 'ok', ready: true, redis: 'up' });
      expect(ready.headers.get('x-request-id')).toBeTruthy();

      await redis.stop();
      const started = Date.now();
      const down = await raw(g, '/readyz', { token: null });
      expect(Date.now() - started).toBeLessThan(1_500);
      expect(down.status).toBe(503);
      expect(down.headers.get('content-type')).toMatch(/^application\/json/);
      expect(down.json).toMatchObject({ status: 'unavailable', ready: false, redis: 'down' });
      expect((await raw(g, '/healthz', { token: null })).status).toBe(503);

      await eventually(() => expect(parsed(g.logs).some((l) => l['msg'] === 'redis is down' && l['level'] === 'error')).toBe(true));
      const downLine = parsed(g.logs).find((l) => l['msg'] === 'redis is down');
      expect(downLine?.['redis']).toBe(redis.url);
      expect(JSON.stringify(downLine)).not.toMatch(/connect ECONNREFUSED|Connection is closed/);

      await redis.restart();
      await eventually(async () => expect((await raw(g, '/readyz', { token: null })).status).toBe(200), { timeoutMs: 10_000, intervalMs: 100 });
      expect(parsed(g.logs).some((l) => l['msg'] === 'redis is up')).toBe(true);
    } finally {
      await g.close();
      await redis.stop();
    }
  }, 30_000);
});

test("the README's endpoints table is the generated one (else: npm run docs:gateway)", () => {
  const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
  expect(currentBlock(readme, ENDPOINTS_BEGIN, ENDPOINTS_END), 'README.md is out of date: run `npm run docs:gateway` and commit README.md').toBe(renderEndpoints());
  expect(renderEndpoints()).toContain('GET /readyz');
});
