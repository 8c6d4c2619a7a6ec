/**
 * Pub/sub at the edge: publish JSON events on a channel, and relay a channel to a browser as
 * Server-Sent Events for as long as the browser's request lives.
 *
 * The relay subscribes with `@upstash/redis`'s `subscribe()`, which holds one streaming HTTP request
 * to the REST endpoint (`/subscribe/<channel>`) per relay; the REST server holds one Redis connection
 * for it. Hand it a plain client (`createRedis(env)`): the subscription is a stream, not a command,
 * and no command budget (`REDIS_TIMEOUT_MS`) applies to it once it is open.
 *
 * - `sseRelay` resolves only once Redis confirmed the subscription, so an outage is known before
 *   any byte of the stream: it rejects with a `PubSubError` (`unavailable`; 503 through `edge-redis/hono`).
 * - Each message goes out as `event: <event>\ndata: <json>\n\n` (the message re-serialised as one JSON
 *   line; a non-JSON payload arrives as a JSON string), plus a `: keepalive` comment every
 *   `keepaliveMs` so proxies keep the connection open.
 * - The subscription ends (the upstream request is aborted, which frees the Redis connection) when
 *   the browser goes away (the stream is cancelled), when the stream reaches `maxAgeMs`, when nobody
 *   reads it within `unreadTimeoutMs` (the response was replaced, e.g. by a rate limiter's 429), or
 *   when the subscription fails. A browser's EventSource reconnects by itself after `retry` ms.
 * - Known limit: the client does not report an upstream stream that ends quietly (REST server
 *   restarted); `maxAgeMs` bounds how long such a relay stays silent before the browser reconnects.
 *
 * Failure policy: fail closed before the stream starts (`PubSubError`); after that, a failure ends the stream.
 *
 * @example
 * app.get('/events/inventory', async (c) => c.body(await sseRelay(createRedis(c.env), channel, { event: 'inventory' }), 200, SSE_HEADERS));
 * await publishJson(redis, channel, { type: 'inventory.changed', items, at: Date.now() });
 */
import { PubSubError } from './errors.ts';
import type { RedisCommands } from './redis.ts';
import { wholeNumber, withTimeout } from './util.ts';

export { PubSubError };

/** The client surface the relay uses. */
export type SubscribeRedis = RedisCommands<'subscribe'>;

/** Response headers of an SSE stream (`no-transform` and `X-Accel-Buffering` stop proxies buffering it). */
export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
} as const;

export interface SseRelayOptions {
  /** The SSE `event:` name of each message. @default "message" */
  event?: string;
  /** A `: keepalive` comment this often. @default 15_000 */
  keepaliveMs?: number;
  /** How long to wait for Redis to confirm the subscription. @default 3_000 */
  connectTimeoutMs?: number;
  /** The stream ends after this long; the browser reconnects. @default 600_000 (10 min) */
  maxAgeMs?: number;
  /** Sent as the SSE `retry:` field: the browser's reconnection delay. @default 3_000 */
  retryMs?: number;
  /** Ends the relay if nobody starts reading the stream within this long. @default 10_000 */
  unreadTimeoutMs?: number;
  /** Most messages queued for a reader that does not keep up; past it the stream ends. @default 1_000 */
  maxQueued?: number;
  /** Called once when the relay ends, whatever ended it (the subscription is being released). */
  onClose?: (reason: 'cancel' | 'max-age' | 'unread' | 'overflow' | 'error') => void;
}

/**
 * Publishes `message` as JSON on `channel`; answers how many subscribers Redis reached. One command.
 *
 * @example
 * await publishJson(redis, keys.key('events', 'inventory'), { type: 'inventory.changed', items, at });
 */
export function publishJson(redis: RedisCommands<'publish'>, channel: string, message: unknown): Promise<number> {
  return redis.publish(channel, JSON.stringify(message));
}

/**
 * Subscribes to `channel` and answers a stream of SSE bytes relaying it, once Redis has confirmed the
 * subscription. Rejects with a `PubSubError` if it could not subscribe.
 *
 * @example
 * const stream = await sseRelay(createRedis(c.env), keys.key('events', 'inventory'), { event: 'inventory' });
 * return c.body(stream, 200, SSE_HEADERS);
 */
export async function sseRelay(redis: SubscribeRedis, channel: string, options: SseRelayOptions = {}): Promise<ReadableStream<Uint8Array>> {
  const {
    event = 'message', keepaliveMs = 15_000, connectTimeoutMs = 3_000, maxAgeMs = 600_000, retryMs = 3_000, unreadTimeoutMs = 10_000, maxQueued = 1_000, onClose,
  } = options;
  if (!/^[\w.:-]{1,64}$/.test(event)) throw new TypeError('sseRelay: event must be 1..64 of [A-Za-z0-9_.:-]');
  for (const [name, n] of Object.entries({ keepaliveMs, connectTimeoutMs, maxAgeMs, retryMs, unreadTimeoutMs, maxQueued })) wholeNumber(`sseRelay: ${name}`, n);

  const sub = redis.subscribe<unknown>(channel);
  try {
    const confirmed = new Promise<void>((resolve, reject) => {
      sub.on('subscribe', () => resolve());
      sub.on('error', (err) => reject(err));
    });
    await withTimeout(confirmed, connectTimeoutMs, () => new Error(`no subscription confirmed within ${connectTimeoutMs} ms`));
  } catch (cause) {
    await sub.unsubscribe().catch(() => undefined);
    throw new PubSubError('subscribe', { cause });
  }

  const encoder = new TextEncoder();
  let ended = false;
  let read = false;
  const timers: ReturnType<typeof setTimeout>[] = [];
  let keepalive: ReturnType<typeof setInterval> | undefined;
  // Set in start(); the stream calls start() synchronously in its constructor.
  let end: (reason: Parameters<NonNullable<SseRelayOptions['onClose']>>[0], close: boolean) => void = () => undefined;

  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        end = (reason, close) => {
          if (ended) return;
          ended = true;
          if (keepalive !== undefined) clearInterval(keepalive);
          for (const t of timers) clearTimeout(t);
          // Aborts the upstream request: the REST server unsubscribes and frees its connection.
          void sub.unsubscribe().catch(() => undefined);
          if (close) {
            try {
              controller.close();
            } catch {
              // already closed or errored by the reader
            }
          }
          onClose?.(reason);
        };
        const send = (text: string) => {
          if (ended) return;
          if ((controller.desiredSize ?? 0) < -maxQueued) return end('overflow', true);
          controller.enqueue(encoder.encode(text));
        };
        sub.on('message', ({ message }) => send(`event: ${event}\ndata: ${JSON.stringify(message) ?? 'null'}\n\n`));
        sub.on('error', () => end('error', true));
        keepalive = setInterval(() => send(': keepalive\n\n'), keepaliveMs);
        timers.push(setTimeout(() => end('max-age', true), maxAgeMs));
        // With highWaterMark 0, pull() runs only when someone reads: a response that was never sent
        // (replaced after the handler ran) never reads, and must not keep a subscription open.
        timers.push(setTimeout(() => { if (!read) end('unread', true); }, unreadTimeoutMs));
        send(`retry: ${retryMs}\n\n`);
      },
      pull() {
        read = true;
      },
      cancel() {
        end('cancel', false);
      },
    },
    { highWaterMark: 0 },
  );
}
