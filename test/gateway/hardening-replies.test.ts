/**
 * No reply reaches another request: commands Redis answers with nothing are refused before they
 * reach a shared connection, and a shared connection that may have missed a reply (a deadline hit)
 * is retired, never reused. Each test runs against a private redis-server.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { errorOf, post, show, type PrivateGateway, type Target } from './helpers.ts';
import { BUSY_1S, clientList, privateStack, sleep, type PrivateStack } from './processes.ts';

describe('REPLCONF ACK gets no reply from Redis: refused, so no later reply shifts onto another token', () => {
  const t = { writer: randomUUID(), reader: randomUUID(), attacker: randomUUID() };
  let stack: PrivateStack;
  const as = (token: string): Target => stack.as(token);

  beforeAll(async () => {
    stack = await privateStack({
      prepare: (redis) => redis.mset({ secret: 'the-writers-secret', public: 'hello' }).then(() => undefined),
      tokens: (url) => [
        { name: 'writer', token: t.writer, redisUrl: url },
        { name: 'reader', token: t.reader, redisUrl: url, readonly: true },
        { name: 'attacker', token: t.attacker, redisUrl: url },
      ],
      env: { GATEWAY_TIMEOUT_MS: '2000' },
    });
  });
  afterAll(() => stack.close());

  test.each([
    { route: '/', body: ['replconf', 'ack', '0'] },
    { route: '/pipeline', body: [['replconf', 'ack', '0']] },
    { route: '/multi-exec', body: [['replconf', 'ack', '0']] },
    { route: '/', body: ['REPLCONF', 'GETACK', '*'] },
  ])('$route $body.0 …: refused, and the read-only token reads its own value', async ({ route, body }) => {
    const attack = post(as(t.attacker), route, body);
    // Sent while the attacker's request is in flight, as a victim would be.
    const [read, secret] = await Promise.all([post(as(t.reader), '/', ['get', 'public']), post(as(t.writer), '/', ['get', 'secret'])]);
    const answered = await attack;
    expect(answered.status, show(answered)).toBe(403);
    expect(errorOf(answered), show(answered)).toMatch(/^NOPERM REPLCONF/);
    expect(answered.text).not.toContain('the-writers-secret');
    expect(read.json, show(read)).toEqual({ result: 'hello' });
    expect(secret.json, show(secret)).toEqual({ result: 'the-writers-secret' });
  });
});

describe('a shared connection whose request hit its deadline is retired, never reused', () => {
  let stack: PrivateStack;
  let gw: PrivateGateway;
  let look: Redis;

  beforeAll(async () => {
    // Admin commands allowed, so that CLIENT ID can name the connection that carries the requests.
    stack = await privateStack({ env: { GATEWAY_ALLOW_ADMIN_COMMANDS: 'true', GATEWAY_TIMEOUT_MS: '500' } });
    ({ gw, look } = stack);
  });
  afterAll(() => stack.close());

  async function connectionId(): Promise<number> {
    const res = await post(gw, '/', ['client', 'id']);
    const id = (res.json as { result?: unknown } | undefined)?.result;
    if (typeof id !== 'number') throw new Error(`CLIENT ID: ${show(res)}`);
    return id;
  }

  test('after a 504 the next request runs on a fresh connection, and the old one is closed in Redis', async () => {
    const before = await connectionId();
    // A script busy for 1 s stands in for any command Redis answers after the 500 ms deadline.
    const late = await post(gw, '/', ['eval', BUSY_1S, '0']);
    expect(late.status, show(late)).toBe(504);
    await sleep(700); // the script is over: Redis would answer it now
    const after = await connectionId();
    expect(after).not.toBe(before);
    const ids = (await clientList(look)).map((l) => Number(/^id=(\d+)/.exec(l)?.[1]));
    expect(ids).not.toContain(before);
    const k = `k:${randomUUID()}`;
    const piped = await post(gw, '/pipeline', [['set', k, 'v'], ['get', k], ['ping']]);
    expect(piped.json, show(piped)).toEqual([{ result: 'OK' }, { result: 'v' }, { result: 'PONG' }]);
  });
});
