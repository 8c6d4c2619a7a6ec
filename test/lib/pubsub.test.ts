/**
 * src/lib/pubsub.ts: the SSE relay against real Redis through the gateway's `/subscribe` stream:
 * messages relayed as SSE, keepalives, the subscription released on cancel, on max age and when
 * nobody reads, and 503 before the stream when Redis cannot be reached.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { describe, expect, inject, it } from 'vitest';
import { edgeRedisProblem } from 'edge-redis/hono';
import { PubSubError, publishJson, sseRelay, type SseRelayOptions } from 'edge-redis/pubsub';
import { createRedis } from 'edge-redis/redis';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const channel = () => `t${crypto.randomUUID()}:events`;

/** Subscribers of `channel` now (PUBSUB NUMSUB through the gateway). */
async function numsub(name: string): Promise<number> {
  const reply = await redis.exec<[string, number]>(['pubsub', 'numsub', name]);
  return Number(reply[1]);
}

/** Polls (bounded) until nobody is subscribed to `name`. */
async function released(name: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await numsub(name)) === 0) return;
    await sleep(50);
  }
  throw new Error(`${name} still has subscribers`);
}

/** Reads SSE text until `until` matches what has arrived (or the stream ends); bounded by reads. */
async function readUntil(reader: ReadableStreamDefaultReader<Uint8Array>, until: RegExp, state: { text: string }): Promise<string> {
  const decoder = new TextDecoder();
  for (let i = 0; i < 100 && !until.test(state.text); i++) {
    const { value, done } = await reader.read();
    if (done) break;
    state.text += decoder.decode(value, { stream: true });
  }
  return state.text;
}

function relay(name: string, options: SseRelayOptions = {}) {
  const closed: string[] = [];
  const started = sseRelay(redis, name, { ...options, onClose: (reason) => closed.push(reason) });
  return { started, closed };
}

describe('sseRelay', () => {
  it('relays each message as `event: <name>` + one JSON data line, after a retry hint; cancel releases the subscription', async () => {
    const name = channel();
    const { started, closed } = relay(name, { event: 'inventory', retryMs: 2_500 });
    const stream = await started;
    // Resolved means subscribed: a message published now is not lost.
    expect(await numsub(name)).toBe(1);
    const reader = stream.getReader();
    const state = { text: '' };
    expect(await readUntil(reader, /retry: 2500\n\n/, state)).toBe('retry: 2500\n\n');

    const events = [{ type: 'inventory.changed', items: [{ productId: 7, stock: 2 }], at: 1 }, { note: 'line\nbreak, "quoted"' }];
    for (const e of events) expect(await publishJson(redis, name, e)).toBe(1);
    const text = await readUntil(reader, /(event: inventory\ndata: .*\n\n[^]*){2}/, state);
    const blocks = text.split('\n\n').filter((b) => b.startsWith('event:'));
    expect(blocks).toEqual(events.map((e) => `event: inventory\ndata: ${JSON.stringify(e)}`));

    await reader.cancel();
    await released(name);
    expect(closed).toEqual(['cancel']);
  });

  it('sends a keepalive comment every keepaliveMs', async () => {
    const name = channel();
    const stream = await relay(name, { keepaliveMs: 30 }).started;
    const reader = stream.getReader();
    expect(await readUntil(reader, /: keepalive\n\n: keepalive\n\n/, { text: '' })).toMatch(/^retry: 3000\n\n(: keepalive\n\n)+$/);
    await reader.cancel();
    await released(name);
  });

  it('ends the stream at maxAgeMs and releases the subscription (the browser reconnects)', async () => {
    const name = channel();
    const { started, closed } = relay(name, { maxAgeMs: 100 });
    const reader = (await started).getReader();
    const state = { text: '' };
    await readUntil(reader, /(?!)/, state); // reads until the stream ends
    expect((await reader.read()).done).toBe(true);
    expect(closed).toEqual(['max-age']);
    await released(name);
  });

  it('a stream nobody reads (its response was replaced) releases the subscription after unreadTimeoutMs', async () => {
    const name = channel();
    const { started, closed } = relay(name, { unreadTimeoutMs: 50 });
    await started;
    expect(await numsub(name)).toBe(1);
    await released(name);
    expect(closed).toEqual(['unread']);
  });

  it('rejects a bad option before subscribing', async () => {
    await expect(sseRelay(redis, channel(), { event: 'bad name\n' })).rejects.toBeInstanceOf(TypeError);
    await expect(sseRelay(redis, channel(), { keepaliveMs: 0 })).rejects.toBeInstanceOf(RangeError);
  });
});

describe('failure policy: 503 before the stream', () => {
  // The app's plain client (2 quick retries of network errors), as src/functions/events.ts uses it.
  const app = (restUrl: string, restToken = token) => createRedis({ UPSTASH_REDIS_REST_URL: restUrl, UPSTASH_REDIS_REST_TOKEN: restToken });
  const cases: [string, () => Redis, SseRelayOptions, RegExp][] = [
    ['nothing listens at the REST URL', () => app(inject('closedUrl')), {}, /Network connection lost|connect/i],
    ['the gateway is up but its Redis is down', () => app(inject('downGatewayUrl')), {}, /unavailable/i],
    ['the token is wrong', () => app(url, 'not-the-token'), {}, /WRONGPASS|auth|token/i],
    ['no confirmation within connectTimeoutMs (gateway +400 ms)', () => app(inject('slowGatewayUrl')), { connectTimeoutMs: 100 }, /no subscription confirmed within 100 ms/],
  ];
  for (const [name, client, options, cause] of cases) {
    it(`${name}: PubSubError (503 + Retry-After through edge-redis/hono) with the cause`, async () => {
      const err: unknown = await sseRelay(client(), channel(), options).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(PubSubError);
      expect(err).toMatchObject({ code: 'unavailable', cause: { message: expect.stringMatching(cause) } });
      expect(edgeRedisProblem(err as PubSubError)).toMatchObject({ code: 'unavailable', headers: { 'retry-after': '2' } });
    });
  }
});
