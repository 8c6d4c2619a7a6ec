/**
 * The HTTP side of the hardening: the base path is enforced, path-form arguments arrive verbatim,
 * introspection is shaped per token, and sockets are limited (how many, how slow their headers and
 * bodies may be, how long they may idle). Raw sockets send what fetch would normalise or not send.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConfigError, loadConfig } from '../../gateway/config.ts';
import { errorOf, post, privateGateway, raw, redisUrl, shared, show, type PrivateGateway, type Target } from './helpers.ts';
import { privateStack, readUntil, sleep, socketTo, type PrivateStack } from './processes.ts';

/** Sends `head` (and nothing else) on a fresh socket; what comes back until the server closes it. */
async function rawRequest(target: { url: string }, head: string, ms = 3_000): Promise<{ text: string; timedOut: boolean; closed: boolean }> {
  const socket = await socketTo(target.url);
  socket.write(head);
  const answer = await readUntil(socket, ms);
  socket.destroy();
  return answer;
}

/** The JSON body of a raw HTTP answer. */
function bodyOf(text: string): unknown {
  const at = text.indexOf('\r\n\r\n');
  return JSON.parse(text.slice(at + 4));
}

describe('GATEWAY_BASE_PATH', () => {
  let gw: PrivateGateway;
  beforeAll(async () => {
    gw = await privateGateway({ GATEWAY_BASE_PATH: '/redis' });
  });
  afterAll(async () => {
    await gw.close();
  });
  const root = (): Target => ({ url: gw.url.replace(/\/redis$/, ''), token: gw.token });

  test('routes outside it answer 404 JSON and run nothing; inside it they work', async () => {
    const k = `outside:${randomUUID()}`;
    for (const path of [`/set/${k}/1`, '/', '/pipeline', '/healthz', `/redisx/set/${k}/1`]) {
      const res = await raw(root(), path, path === '/' || path === '/pipeline' ? { body: JSON.stringify(path === '/' ? ['set', k, '1'] : [['set', k, '1']]) } : {});
      expect(res.status, `${path}: ${show(res)}`).toBe(404);
      expect(errorOf(res), show(res)).toMatch(/GATEWAY_BASE_PATH/);
    }
    const check = await post(gw, '/', ['exists', k]);
    expect(check.json, show(check)).toEqual({ result: 0 });
    expect((await raw(gw, `/set/${encodeURIComponent(k)}/1`)).json).toEqual({ result: 'OK' });
    expect((await raw(gw, '/healthz', { token: null })).status).toBe(200);
  });
});

describe('path-form arguments are kept verbatim (no URL normalisation)', () => {
  const gw = shared();
  test.each([
    { name: '..', segment: '..', value: '..' },
    { name: '%2e%2e', segment: '%2e%2e', value: '..' },
    { name: '.', segment: '.', value: '.' },
    { name: 'a backslash', segment: 'a\\b', value: 'a\\b' },
    { name: '%2F inside a segment', segment: 'a%2Fb', value: 'a/b' },
  ])('$name', async ({ segment, value }) => {
    const k = `verbatim:${randomUUID()}`;
    const answer = await rawRequest(gw, `GET /set/${k}/${segment} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${gw.token}\r\nConnection: close\r\n\r\n`);
    expect(bodyOf(answer.text), answer.text).toEqual({ result: 'OK' });
    const get = await post(gw, '/', ['get', k]);
    expect(get.json, show(get)).toEqual({ result: value });
  });

  test('an empty segment is an empty argument', async () => {
    const k = `verbatim:${randomUUID()}`;
    const answer = await rawRequest(gw, `GET /hset/${k}//v HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${gw.token}\r\nConnection: close\r\n\r\n`);
    expect(bodyOf(answer.text), answer.text).toEqual({ result: 1 });
    const get = await post(gw, '/', ['hget', k, '']);
    expect(get.json, show(get)).toEqual({ result: 'v' });
  });
});

describe('introspection shaped per token', () => {
  const t = { app: randomUUID(), ro: randomUUID() };
  let stack: PrivateStack;
  const as = (token: string): Target => stack.as(token);

  beforeAll(async () => {
    stack = await privateStack({
      prepare: async (redis) => {
        await redis.select(1);
        await redis.set('other-db', 'x');
        await redis.select(0);
        await redis.set('own-db', 'x');
      },
      tokens: (url) => [{ name: 'app', token: t.app, redisUrl: url }, { name: 'ro', token: t.ro, redisUrl: url, readonly: true }],
    });
  });
  afterAll(() => stack.close());

  test.each(['app', 'ro'] as const)('INFO for the %s token: no executable or config file path, only its own database\'s keys', async (who) => {
    const res = await post(as(t[who]), '/', ['info']);
    expect(res.status, show(res)).toBe(200);
    const text = String((res.json as { result: unknown }).result);
    expect(text).toMatch(/^redis_version:7/m);
    expect(text).toMatch(/^used_memory:\d+/m);
    expect(text).not.toMatch(/^executable:|^config_file:/m);
    expect(text).toMatch(/^db0:keys=1/m);
    expect(text).not.toMatch(/^db1:/m);
  });

  test('SLOWLOG (other clients\' commands and addresses) and other introspection are denied', async () => {
    for (const cmd of [['slowlog', 'get'], ['slowlog', 'len'], ['client', 'list'], ['latency', 'latest'], ['role'], ['config', 'get', 'dir']]) {
      const res = await post(as(t.app), '/', cmd);
      expect(res.status, show(res)).toBe(403);
    }
  });

  test('a fully trusted token (admin allowed: the shared test gateway) gets INFO as Redis says it', async () => {
    const res = await post(shared(), '/', ['info', 'server']);
    expect(String((res.json as { result: unknown }).result)).toMatch(/^executable:/m);
  });
});

describe('socket limits', () => {
  test('GATEWAY_MAX_SOCKETS: a socket past the limit is closed at once; a freed slot serves again', async () => {
    const gw = await privateGateway({ GATEWAY_MAX_SOCKETS: '3' });
    const held = await Promise.all([1, 2, 3].map(() => socketTo(gw.url)));
    try {
      await sleep(50);
      const extra = await rawRequest(gw, `POST / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${gw.token}\r\nContent-Length: 8\r\n\r\n["ping"]`, 2_000);
      expect(extra.closed, JSON.stringify(extra)).toBe(true);
      expect(extra.text).toBe('');
      held.pop()?.destroy();
      await sleep(50);
      const served = await rawRequest(gw, `POST / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${gw.token}\r\nContent-Length: 8\r\nConnection: close\r\n\r\n["ping"]`);
      expect(bodyOf(served.text), served.text).toEqual({ result: 'PONG' });
    } finally {
      for (const s of held) s.destroy();
      await gw.close();
    }
  });

  test('slow headers and slow bodies get 408 JSON and a closed socket; idle keep-alive sockets are closed', async () => {
    const gw = await privateGateway({ GATEWAY_HEADERS_TIMEOUT_MS: '300', GATEWAY_BODY_TIMEOUT_MS: '800', GATEWAY_IDLE_TIMEOUT_MS: '300' });
    try {
      const started = Date.now();
      const headers = await rawRequest(gw, `POST / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${gw.token}\r\n`);
      expect(headers.closed, JSON.stringify(headers)).toBe(true);
      expect(headers.text).toMatch(/^HTTP\/1\.1 408 /);
      expect(bodyOf(headers.text)).toEqual({ error: expect.stringMatching(/GATEWAY_HEADERS_TIMEOUT_MS=300/) });
      expect(Date.now() - started).toBeLessThan(1_500);

      const body = await rawRequest(gw, `POST / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${gw.token}\r\nContent-Length: 100\r\n\r\n["set","k",`);
      expect(body.closed, JSON.stringify(body)).toBe(true);
      expect(body.text).toMatch(/^HTTP\/1\.1 408 /);
      expect(bodyOf(body.text)).toEqual({ error: expect.stringMatching(/GATEWAY_BODY_TIMEOUT_MS=800/) });

      const socket = await socketTo(gw.url);
      socket.write(`POST / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${gw.token}\r\nContent-Length: 8\r\n\r\n["ping"]`);
      const idle = await readUntil(socket, 3_000);
      socket.destroy();
      expect(idle.text).toMatch(/"result":"PONG"/);
      expect(idle.closed, 'the server closes the idle keep-alive socket').toBe(true);
    } finally {
      await gw.close();
    }
  });

  test('the new limits are checked with one-line errors', () => {
    const base = { REDIS_URL: redisUrl(), GATEWAY_TOKEN: 't' };
    const message = (env: Record<string, string>) => {
      try {
        loadConfig({ ...base, ...env });
        return 'no error';
      } catch (err) {
        return err instanceof ConfigError ? err.message : `not a ConfigError: ${String(err)}`;
      }
    };
    expect(message({ GATEWAY_MAX_SOCKETS: 'many' })).toBe('GATEWAY_MAX_SOCKETS must be a whole number, got "many"');
    expect(message({ GATEWAY_MAX_REPLY_BYTES: '10' })).toBe('GATEWAY_MAX_REPLY_BYTES must be between 1024 and 1073741824, got 10');
    expect(message({ GATEWAY_MAX_STREAM_BUFFER_BYTES: '-1' })).toBe('GATEWAY_MAX_STREAM_BUFFER_BYTES must be a whole number, got "-1"');
    expect(message({ GATEWAY_IDLE_TIMEOUT_MS: '0' })).toBe('GATEWAY_IDLE_TIMEOUT_MS must be between 100 and 3600000, got 0');
    expect(message({ GATEWAY_HEADERS_TIMEOUT_MS: '5000', GATEWAY_BODY_TIMEOUT_MS: '1000' }))
      .toBe('GATEWAY_HEADERS_TIMEOUT_MS (5000) must not be longer than GATEWAY_BODY_TIMEOUT_MS (1000), which counts the headers too');
    expect(message({ GATEWAY_REDIS_PASSWORD: 'pw' })).toBe('GATEWAY_REDIS_PASSWORD needs GATEWAY_REDIS_USER');
    const defaults = loadConfig(base);
    expect(defaults).toMatchObject({ maxReplyBytes: 32 * 1024 * 1024, maxStreamBufferBytes: 4 * 1024 * 1024, maxSockets: 4096, headersTimeoutMs: 10_000, bodyTimeoutMs: 30_000, idleTimeoutMs: 65_000 });
  });
});
