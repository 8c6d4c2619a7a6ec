/**
 * The gateway's Prometheus counters, read from a private gateway so that only this file's requests
 * are counted.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { client, commandCounts, commandDelta, eventually, metric, openSse, post, prefix, privateGateway, scrape, type PrivateGateway } from './helpers.ts';

let gw: PrivateGateway;
beforeAll(async () => {
  gw = await privateGateway();
});
afterAll(async () => {
  await gw.close();
});

describe('gateway metrics', () => {
  test('commands are counted by name, whichever route carried them', async () => {
    const before = commandCounts(await scrape(gw));
    const p = prefix();
    const one = client(gw, { autoPipelining: false });
    await one.set(`${p}a`, '1');
    await one.get(`${p}a`);
    await post(gw, '/pipeline', [['set', `${p}b`, '2'], ['get', `${p}b`], ['get', `${p}c`]]);
    await post(gw, '/multi-exec', [['incr', `${p}n`], ['incr', `${p}n`]]);
    expect(commandDelta(before, commandCounts(await scrape(gw)))).toEqual({ set: 2, get: 3, incr: 2 });
  });

  test('HTTP requests are counted by route and status', async () => {
    const labels = (route: string, status: string) => ({ route, status });
    const before = await scrape(gw);
    await post(gw, '/', ['ping']);
    await post(gw, '/', ['ping']);
    await post(gw, '/pipeline', [['ping']]);
    await post(gw, '/', ['ping'], { token: 'wrong' });
    await post(gw, '/', 'not a command');
    const after = await scrape(gw);
    const delta = (route: string, status: string) => metric(after, 'gateway_http_requests_total', labels(route, status)) - metric(before, 'gateway_http_requests_total', labels(route, status));
    expect(delta('/', '200')).toBe(2);
    expect(delta('/pipeline', '200')).toBe(1);
    expect(delta('/', '401')).toBe(1);
    expect(delta('/', '400')).toBe(1);
  });

  test('the duration histogram is consistent: cumulative buckets, +Inf equals the count', async () => {
    await post(gw, '/', ['ping']);
    const text = await scrape(gw);
    const buckets = text.split('\n')
      .filter((l) => l.startsWith('gateway_request_duration_seconds_bucket{route="/",'))
      .map((l) => Number(l.split(' ').pop()));
    expect(buckets.length).toBeGreaterThan(2);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]).toBeGreaterThanOrEqual(buckets[i - 1] ?? 0);
    const count = metric(text, 'gateway_request_duration_seconds_count', { route: '/' });
    expect(count).toBeGreaterThan(0);
    expect(metric(text, 'gateway_request_duration_seconds_bucket', { route: '/', le: '+Inf' })).toBe(count);
  });

  test('unknown command names share one label, so clients cannot grow the series', async () => {
    const name = `nosuch${randomUUID().replaceAll('-', '')}`;
    const before = metric(await scrape(gw), 'gateway_commands_total', { command: 'unknown' });
    const res = await post(gw, '/', [name, 'x']);
    expect(res.status).toBe(400);
    const text = await scrape(gw);
    expect(metric(text, 'gateway_commands_total', { command: 'unknown' })).toBe(before + 1);
    expect(text).not.toContain(name);
  });

  test('gateway_sse_streams follows open event streams; gateway_redis_up is 1', async () => {
    const channel = `${prefix()}ch`;
    expect(metric(await scrape(gw), 'gateway_redis_up')).toBe(1);
    const base = metric(await scrape(gw), 'gateway_sse_streams');
    const stream = await openSse(gw, `/subscribe/${channel}`);
    await stream.waitForLine(`data: subscribe,${channel},1`);
    expect(metric(await scrape(gw), 'gateway_sse_streams')).toBe(base + 1);
    stream.close();
    await eventually(async () => expect(metric(await scrape(gw), 'gateway_sse_streams')).toBe(base), { timeoutMs: 5_000, intervalMs: 50 });
  });
});
