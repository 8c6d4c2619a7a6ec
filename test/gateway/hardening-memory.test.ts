/**
 * Bounded memory: a request cannot make the gateway build a reply past GATEWAY_MAX_REPLY_BYTES, and
 * an SSE subscriber that does not read cannot make it buffer past GATEWAY_MAX_STREAM_BUFFER_BYTES.
 * The gateway runs as a child process with its defaults, so its memory (VmHWM, the peak resident
 * size) is its own; Redis is private.
 */
import type { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { eventually, post, show } from './helpers.ts';
import { childGateway, direct, readUntil, sleep, socketTo, type ChildGateway } from './processes.ts';

const MiB = 1024 * 1024;

let redis: RedisProcess;
let look: Redis;
let gw: ChildGateway;
// A gateway per test: the peak resident size (VmHWM) is the process's whole life.
beforeEach(async () => {
  redis = await startRedisServer();
  look = direct(redis.url);
  gw = await childGateway({ REDIS_URL: redis.url });
});
afterEach(async () => {
  if (process.env['GATEWAY_MEMORY_REPORT']) process.stdout.write(`memory of the gateway: ${JSON.stringify(gw.memory())}\n`);
  look.disconnect();
  await gw.stop();
  await redis.stop();
});

describe('GATEWAY_MAX_REPLY_BYTES (default 32 MiB)', () => {
  test('8 × GET of a 50 MB value in a 121-byte pipeline: an error entry each, and the gateway stays small', async () => {
    await look.setrange('huge', 50 * 1024 * 1024 - 1, 'x');
    await look.set('small', 'fits');
    const before = gw.memory();
    const body = JSON.stringify(Array.from({ length: 8 }, () => ['GET', 'huge']));
    expect(body.length).toBe(121);
    const res = await post(gw, '/pipeline', JSON.parse(body), { base64: true });
    const after = gw.memory();
    expect(res.status, show(res).slice(0, 300)).toBe(200);
    const entries = res.json as { error?: string }[];
    expect(entries).toHaveLength(8);
    for (const e of entries) expect(e.error).toMatch(/^ERR the reply is over the gateway's 33554432 byte limit for one request \(GATEWAY_MAX_REPLY_BYTES\)/);
    // What it costs is about one reply being read (ioredis reads each whole: ~2 × 50 MB, measured
    // ~190 MiB), not eight, nor their base64 JSON (3.4 GB before this limit existed).
    expect(after.peakMiB - before.rssMiB, JSON.stringify({ before, after })).toBeLessThan(400);
    const mixed = await post(gw, '/pipeline', [['get', 'small'], ['get', 'huge'], ['strlen', 'huge']]);
    expect(mixed.status).toBe(200);
    const [small, big, len] = mixed.json as { result?: unknown; error?: string }[];
    expect(small).toEqual({ result: 'fits' });
    expect(big?.error).toMatch(/GATEWAY_MAX_REPLY_BYTES/);
    expect(len).toEqual({ result: 50 * 1024 * 1024 });
    const single = await post(gw, '/', ['get', 'huge']);
    expect(single.status, show(single).slice(0, 300)).toBe(400);
    expect(single.json).toEqual({ error: expect.stringMatching(/GATEWAY_MAX_REPLY_BYTES/) });
  }, 60_000);
});

describe('a subscriber that does not read (GATEWAY_MAX_STREAM_BUFFER_BYTES, default 4 MiB)', () => {
  test('300 × 1 MB published: the stream ends with a final event saying why, and the gateway stays small', async () => {
    // Without Redis's own limit on what a subscriber may have waiting (32 MB by default), which
    // would otherwise cut the gateway's connection first and hide what the gateway buffers.
    await look.config('SET', 'client-output-buffer-limit', 'pubsub 0 0 0');
    const socket = await socketTo(gw.url);
    socket.write(`POST /subscribe/slow HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${gw.token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]`);
    await eventually(async () => expect(await look.call('PUBSUB', 'NUMSUB', 'slow')).toEqual(['slow', 1]), { timeoutMs: 5_000 });
    socket.pause(); // never reads, for now
    const before = gw.memory();
    const payload = Buffer.alloc(MiB, 'm');
    let delivered = 0;
    for (let i = 0; i < 300; i++) delivered += Number(await look.publish('slow', payload));
    await sleep(200);
    const after = gw.memory();
    // The gateway let go of the subscription once the client fell behind.
    expect(await look.call('PUBSUB', 'NUMSUB', 'slow')).toEqual(['slow', 0]);
    expect(delivered).toBeLessThan(300);
    // Measured ~100 MiB (the 4 MiB buffer, socket buffers, and garbage of the messages read from
    // Redis before the stream ended); 300+ MiB before the limit existed.
    expect(after.peakMiB - before.rssMiB, JSON.stringify({ before, after, delivered })).toBeLessThan(150);
    socket.resume();
    // The end of the chunked body.
    const { text, timedOut } = await readUntil(socket, 10_000, (t) => t.endsWith('\r\n0\r\n\r\n'));
    socket.destroy();
    expect(timedOut).toBe(false);
    const lines = text.split('\n').filter((l) => l.startsWith('data: '));
    expect(lines.at(-1)).toMatch(/^data: error,slow,the subscriber fell behind: more than 4194304 bytes were waiting to be sent \(GATEWAY_MAX_STREAM_BUFFER_BYTES\); subscribe again$/);
  }, 60_000);
});
