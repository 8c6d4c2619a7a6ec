/**
 * src/lib/pubsub.ts when Redis restarts empty or is flushed, on a private Redis of this file
 * (test/support/faults.ts). Pub/sub is at most once: what may be lost is events published while a
 * relay is not subscribed (Redis restarting) and, known limit, a relay open across a restart stays
 * silent until its max age ends it (the client does not report a subscription stream that ended
 * quietly). What never happens: a relay that hangs forever, a publish that reports success it did not
 * have, an event delivered to the wrong channel, a new relay that does not get what is published after.
 */
import { Redis } from '@upstash/redis/cloudflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishJson, sseRelay } from 'edge-redis/pubsub';
import { privateRedis, type PrivateRedis } from '../support/faults.ts';

let lab: PrivateRedis;
let redis: Redis;
beforeAll(async () => {
  lab = await privateRedis();
  redis = new Redis({ url: lab.bindings.UPSTASH_REDIS_REST_URL, token: lab.bindings.UPSTASH_REDIS_REST_TOKEN, enableAutoPipelining: false });
});
afterAll(() => lab?.stop());

async function readUntil(reader: ReadableStreamDefaultReader<Uint8Array>, until: RegExp, state: { text: string }, ms = 5_000): Promise<{ text: string; done: boolean }> {
  const decoder = new TextDecoder();
  const deadline = Date.now() + ms;
  while (!until.test(state.text) && Date.now() < deadline) {
    const next = await Promise.race([reader.read(), new Promise<null>((r) => setTimeout(() => r(null), Math.max(1, deadline - Date.now())))]);
    if (next === null) break;
    if (next.done) return { text: state.text, done: true };
    state.text += decoder.decode(next.value, { stream: true });
  }
  return { text: state.text, done: false };
}

describe('a relay across a restart', () => {
  it('Redis restarted empty while a relay is open: it ends by its max age at the latest; a new relay gets what is published after', async () => {
    const channel = `c${crypto.randomUUID()}`;
    const closed: string[] = [];
    const old = (await sseRelay(redis, channel, { maxAgeMs: 1_500, keepaliveMs: 200, onClose: (r) => closed.push(r) })).getReader();
    const seen = { text: '' };
    await readUntil(old, /retry: /, seen);
    expect(await publishJson(redis, channel, { n: 1 })).toBe(1);
    expect((await readUntil(old, /"n":1/, seen)).text).toContain('"n":1');

    await lab.restart();
    const fresh = (await sseRelay(redis, channel, { keepaliveMs: 200 })).getReader();
    const next = { text: '' };
    await readUntil(fresh, /retry: /, next);
    expect(await publishJson(redis, channel, { n: 2 })).toBeGreaterThanOrEqual(1);
    expect((await readUntil(fresh, /"n":2/, next)).text).toContain('"n":2');
    // The old relay never delivers n: 2 (its subscription died with the process) and does not hang.
    const end = await readUntil(old, /$^/, seen, 4_000);
    expect(end.done).toBe(true);
    expect(end.text).not.toContain('"n":2');
    expect(closed).toEqual(['max-age']);
    await fresh.cancel();
  });

  it('FLUSHALL does not touch subscriptions: a relay keeps getting events, never another channel\'s', async () => {
    const channel = `c${crypto.randomUUID()}`;
    const other = `c${crypto.randomUUID()}`;
    const reader = (await sseRelay(redis, channel, { keepaliveMs: 200 })).getReader();
    const seen = { text: '' };
    await readUntil(reader, /retry: /, seen);
    await lab.flushall();
    await publishJson(redis, other, { wrong: true });
    await publishJson(redis, channel, { right: true });
    const got = await readUntil(reader, /"right":true/, seen);
    expect(got.text).toContain('"right":true');
    expect(got.text).not.toContain('wrong');
    await reader.cancel();
  });
});
