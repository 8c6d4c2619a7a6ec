/**
 * `/subscribe/<channel>` and `/psubscribe/<pattern>` as Server-Sent Events, in the line format the
 * Upstash client parses: `data: message,<channel>,<payload>` (payloads raw, never base64).
 * Each stream holds one dedicated Redis connection, released when the client goes away or Redis
 * drops the connection (the stream then ends, and the client may subscribe again).
 *
 * A client that reads slower than messages arrive would make the gateway buffer without bound, so
 * what waits to be sent is capped (GATEWAY_MAX_STREAM_BUFFER_BYTES): a stream past it gets one last
 * event, `data: error,<channel>,<why>` (the Upstash client hands it to its "error" listeners), and
 * ends; its Redis connection is released at once, and the socket is cut if the client still does
 * not read within the keepalive interval.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isReplyError, UnavailableError, type Client } from './connect.ts';
import type { Lane } from './lane.ts';

export type SubscriptionKind = 'subscribe' | 'psubscribe';

const DATA = Buffer.from('data: ');
const COMMA = Buffer.from(',');
const NEWLINE = Buffer.from('\n');

/**
 * One SSE event. A payload holding newlines spans several `data:` lines, as the SSE spec wants.
 * Built with one copy of the payload (messages can be large).
 */
function event(parts: (string | Buffer)[]): Buffer {
  const pieces: Buffer[] = [DATA];
  parts.forEach((p, i) => {
    if (i > 0) pieces.push(COMMA);
    const bytes = Buffer.isBuffer(p) ? p : Buffer.from(p);
    let start = 0;
    for (let nl = bytes.indexOf(0x0a); nl !== -1; nl = bytes.indexOf(0x0a, start)) {
      pieces.push(bytes.subarray(start, nl), NEWLINE, DATA);
      start = nl + 1;
    }
    pieces.push(bytes.subarray(start));
  });
  pieces.push(NEWLINE, NEWLINE);
  return Buffer.concat(pieces);
}

export interface SubscriptionOptions {
  kind: SubscriptionKind;
  target: Buffer;
  lane: Lane;
  keepaliveMs: number;
  maxBufferBytes: number;
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
  const conn: Client = o.lane.dedicated();
  let closed = false;
  let keepalive: NodeJS.Timeout | undefined;
  const finish = () => {
    if (closed) return;
    closed = true;
    clearInterval(keepalive);
    o.lane.release(conn);
    // Before the 200 went out, the caller answers (503); after it, ending the stream tells the
    // client the subscription is over.
    if (res.headersSent && !res.writableEnded) res.end();
    o.onClose();
  };
  req.on('close', finish);
  res.on('close', finish);
  conn.on('end', finish);

  /** Writes unless the client is too far behind, in which case the stream ends saying why. */
  const write = (chunk: Buffer | string) => {
    if (closed) return;
    if (res.writableLength + chunk.length <= o.maxBufferBytes) {
      res.write(chunk);
      return;
    }
    res.write(event(['error', o.target, `the subscriber fell behind: more than ${o.maxBufferBytes} bytes were waiting to be sent (GATEWAY_MAX_STREAM_BUFFER_BYTES); subscribe again`]));
    finish();
    // A client that does not read even now is cut, so its socket's buffer is freed too.
    setTimeout(() => {
      if (!res.writableFinished) res.destroy();
    }, o.keepaliveMs).unref();
  };
  if (o.kind === 'subscribe') {
    conn.on('messageBuffer', (channel: Buffer, message: Buffer) => write(event(['message', channel, message])));
  } else {
    conn.on('pmessageBuffer', (pattern: Buffer, channel: Buffer, message: Buffer) => write(event(['pmessage', pattern, channel, message])));
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
  keepalive = setInterval(() => write(': keepalive\n\n'), o.keepaliveMs);
  keepalive.unref();
  o.onOpen();
}
