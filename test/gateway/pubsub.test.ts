/**
 * Pub/sub over Server-Sent Events: the client's `subscribe()` / `psubscribe()` against the gateway,
 * PUBLISH from another client, exact payloads, and the Redis connection released on unsubscribe.
 */
import { describe, expect, test } from 'vitest';
import { client, collectEvents, eventually, nextEvent, numsub, openSse, prefix, shared, type Subscriber } from './helpers.ts';

const PAYLOADS = ['plain', 'with, commas, inside', 'ünïcödé 日本語 🚀👩‍👩‍👧', 'OK', '{"a":1,"b":"x,y"}', 'T0s='];

/** Subscribers of `channel` reaching 0 (PUBLISH counts pattern subscribers too). */
async function waitUntilNobodyListens(channel: string, publisher: ReturnType<typeof client>): Promise<void> {
  await eventually(
    async () => {
      expect(await numsub(shared(), channel)).toBe(0);
      expect(await publisher.publish(channel, 'anyone?')).toBe(0);
    },
    { timeoutMs: 5_000, intervalMs: 50 },
  );
}

async function received<T>(list: T[], count: number): Promise<T[]> {
  await eventually(() => expect(list.length).toBeGreaterThanOrEqual(count), { timeoutMs: 5_000, intervalMs: 10 });
  return list;
}

describe.each([
  { name: 'base64 header', base64: true },
  { name: 'no base64 header', base64: false },
])('client subscribe / psubscribe ($name)', ({ base64 }) => {
  const listener = client(shared(), { base64, deserialize: false });
  const publisher = client(shared(), { autoPipelining: false });

  test('subscribe receives every message with its exact payload, in order; unsubscribe releases', async () => {
    const channel = `${prefix()}news`;
    const sub: Subscriber = listener.subscribe(channel);
    try {
      expect(await nextEvent(sub, 'subscribe')).toBe(1);
      expect(await numsub(shared(), channel)).toBe(1);
      const messages = collectEvents(sub, 'message');
      for (const payload of PAYLOADS) expect(await publisher.publish(channel, payload)).toBe(1);
      expect(await received(messages, PAYLOADS.length)).toEqual(PAYLOADS.map((message) => ({ channel, message })));
    } finally {
      await sub.unsubscribe();
    }
    await waitUntilNobodyListens(channel, publisher);
  });

  test('psubscribe receives pmessage with pattern, channel and payload', async () => {
    const p = prefix();
    const pattern = `${p}room:*`;
    const sub = listener.psubscribe(pattern);
    try {
      expect(await nextEvent(sub, 'psubscribe')).toBe(1);
      const messages = collectEvents(sub, 'pmessage');
      expect(await publisher.publish(`${p}room:1`, 'hi, all ü')).toBe(1);
      expect(await publisher.publish(`${p}other`, 'not for us')).toBe(0);
      expect(await publisher.publish(`${p}room:2`, '🚀,🚀')).toBe(1);
      expect(await received(messages, 2)).toEqual([
        { pattern, channel: `${p}room:1`, message: 'hi, all ü' },
        { pattern, channel: `${p}room:2`, message: '🚀,🚀' },
      ]);
    } finally {
      await sub.unsubscribe();
    }
    await waitUntilNobodyListens(`${p}room:1`, publisher);
  });
});

describe('subscriptions: names, several subscribers, deserialization', () => {
  const gw = shared();
  const publisher = client(gw, { autoPipelining: false });

  test('a channel name with spaces, unicode and slashes', async () => {
    const channel = `${prefix()}a/b c/ü🚀`;
    const sub = client(gw, { deserialize: false }).subscribe(channel);
    try {
      expect(await nextEvent(sub, 'subscribe')).toBe(1);
      const message = nextEvent(sub, 'message');
      expect(await publisher.publish(channel, 'x,y')).toBe(1);
      expect(await message).toEqual({ channel, message: 'x,y' });
    } finally {
      await sub.unsubscribe();
    }
    await waitUntilNobodyListens(channel, publisher);
  });

  test('two subscribers of one channel both receive; one leaving leaves the other', async () => {
    const channel = `${prefix()}both`;
    const a = client(gw, { deserialize: false }).subscribe(channel);
    const b = client(gw, { deserialize: false }).subscribe(channel);
    try {
      await Promise.all([nextEvent(a, 'subscribe'), nextEvent(b, 'subscribe')]);
      const [ma, mb] = [nextEvent(a, 'message'), nextEvent(b, 'message')];
      expect(await publisher.publish(channel, 'to both')).toBe(2);
      expect(await ma).toEqual({ channel, message: 'to both' });
      expect(await mb).toEqual({ channel, message: 'to both' });
      await a.unsubscribe();
      await eventually(async () => expect(await numsub(gw, channel)).toBe(1), { timeoutMs: 5_000, intervalMs: 50 });
      const later = nextEvent(b, 'message');
      expect(await publisher.publish(channel, 'only b')).toBe(1);
      expect(await later).toEqual({ channel, message: 'only b' });
    } finally {
      await a.unsubscribe();
      await b.unsubscribe();
    }
    await waitUntilNobodyListens(channel, publisher);
  });

  test('with automatic deserialization a JSON payload arrives as the value', async () => {
    const channel = `${prefix()}json`;
    const sub = client(gw).subscribe(channel);
    try {
      await nextEvent(sub, 'subscribe');
      const message = nextEvent(sub, 'message');
      await publisher.publish(channel, { id: 7, text: 'ü, 🚀' });
      expect(await message).toEqual({ channel, message: { id: 7, text: 'ü, 🚀' } });
    } finally {
      await sub.unsubscribe();
    }
  });
});

describe('the SSE wire format', () => {
  const gw = shared();
  const publisher = client(gw, { autoPipelining: false });

  test.each([true, false])('/subscribe/<channel with a slash> (base64 header %s): headers and lines, payloads raw', async (base64) => {
    const channel = `${prefix()}a/b`;
    const stream = await openSse(gw, `/subscribe/${channel}`, { base64 });
    try {
      expect(stream.status).toBe(200);
      expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
      expect(stream.headers.get('upstash-sync-token')).toBeTruthy();
      await stream.waitForLine(`data: subscribe,${channel},1`);
      expect(await publisher.publish(channel, 'one, two ü🚀')).toBe(1);
      await stream.waitForLine(`data: message,${channel},one, two ü🚀`);
      // Every event is followed by a blank line.
      const i = stream.lines.indexOf(`data: subscribe,${channel},1`);
      expect(stream.lines[i + 1]).toBe('');
    } finally {
      stream.close();
    }
    await waitUntilNobodyListens(channel, publisher);
  });

  test('/psubscribe/<pattern>: psubscribe and pmessage lines', async () => {
    const p = prefix();
    const pattern = `${p}*`;
    const stream = await openSse(gw, `/psubscribe/${encodeURIComponent(pattern)}`, { base64: true });
    try {
      expect(stream.status).toBe(200);
      await stream.waitForLine(`data: psubscribe,${pattern},1`);
      expect(await publisher.publish(`${p}x`, 'a,b')).toBe(1);
      await stream.waitForLine(`data: pmessage,${pattern},${p}x,a,b`);
    } finally {
      stream.close();
    }
    await waitUntilNobodyListens(`${p}x`, publisher);
  });

  test('a percent-encoded channel name is decoded', async () => {
    const channel = `${prefix()}ü 🚀`;
    const stream = await openSse(gw, `/subscribe/${encodeURIComponent(channel)}`);
    try {
      await stream.waitForLine(`data: subscribe,${channel},1`);
      expect(await numsub(gw, channel)).toBe(1);
    } finally {
      stream.close();
    }
    await waitUntilNobodyListens(channel, publisher);
  });
});
