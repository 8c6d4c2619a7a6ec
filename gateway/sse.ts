/**
 * `/subscribe/<channel>` and `/psubscribe/<pattern>` as Server-Sent Events, in the line format the
 * Upstash client parses: `data: message,<channel>,<payload>` (payloads raw, never base64).
 * Each stream holds one dedicated Redis connection, released when the client goes away or Redis
 * drops the connection (the stream then ends, and the client may subscribe again).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isReplyError, UnavailableError, type Client, type Upstream } from './upstream.ts';

export type SubscriptionKind = 'subscribe' | 'psubscribe';

/** One SSE event. A payload holding newlines spans several `data:` lines, as the SSE spec wants. */
function event(parts: (string | Buffer)[]): Buffer {
  const body = Buffer.concat(parts.map((p, i) => Buffer.concat([i > 0 ? Buffer.from(',') : Buffer.alloc(0), Buffer.isBuffer(p) ? p : Buffer.from(p)])));
  const lines: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= body.length; i++) {
    if (i === body.length || body[i] === 0x0a) {
      lines.push(Buffer.concat([Buffer.from('data: '), body.subarray(start, i), Buffer.from('\n')]));
      start = i + 1;
    }
  }
  lines.push(Buffer.from('\n'));
  return Buffer.concat(lines);
}

export interface SubscriptionOptions {
  kind: SubscriptionKind;
  target: Buffer;
  upstream: Upstream;
  keepaliveMs: number;
  headers: Record<string, string>;
  /** Called once the stream is open (after Redis confirmed the subscription). */
  onOpen(): void;
  onClose(): void;
}

/**
 * Subscribes first, then answers 200, so a Redis outage still gets a proper 503 (thrown to the
 * caller) rather than an empty event stream.
 */
export async function serveSubscription(req: IncomingMessage, res: ServerResponse, o: SubscriptionOptions): Promise<void> {
  const conn: Client = o.upstream.dedicated();
  let closed = false;
  let keepalive: NodeJS.Timeout | undefined;
  const finish = () => {
    if (closed) return;
    closed = true;
    clearInterval(keepalive);
    o.upstream.release(conn);
    // Before the 200 went out, the caller answers (503); after it, ending the stream tells the
    // client the subscription is over.
    if (res.headersSent && !res.writableEnded) res.end();
    o.onClose();
  };
  req.on('close', finish);
  res.on('close', finish);
  conn.on('end', finish);

  if (o.kind === 'subscribe') {
    conn.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      if (!closed) res.write(event(['message', channel, message]));
    });
  } else {
    conn.on('pmessageBuffer', (pattern: Buffer, channel: Buffer, message: Buffer) => {
      if (!closed) res.write(event(['pmessage', pattern, channel, message]));
    });
  }

  let count: unknown;
  try {
    // ioredis accepts Buffer channel names (binary-safe) although its types only list strings.
    const subscribe = (o.kind === 'subscribe' ? conn.subscribe : conn.psubscribe) as unknown as (this: Client, ...names: Buffer[]) => Promise<unknown>;
    count = await subscribe.call(conn, o.target);
  } catch (err) {
    finish();
    throw isReplyError(err) ? err : new UnavailableError('could not subscribe', { cause: err });
  }
  if (closed) return;
  res.writeHead(200, {
    ...o.headers,
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(event([o.kind, o.target, String(count)]));
  keepalive = setInterval(() => res.write(': keepalive\n\n'), o.keepaliveMs);
  keepalive.unref();
  o.onOpen();
}
