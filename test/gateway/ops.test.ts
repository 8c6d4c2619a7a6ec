/**
 * The operable gateway (issue 11 item 4): prom-client's process metrics beside ours on /metrics,
 * JSON log lines with a request id, the `x-request-id` header, `/readyz`, and config refused with
 * one-line errors. Against real Redis processes and real gateways.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { metric, post, privateGateway, scrape, type PrivateGateway } from './helpers.ts';

let gw: PrivateGateway;
beforeAll(async () => {
  gw = await privateGateway();
});
afterAll(async () => {
  await gw.close();
});

describe('/metrics', () => {
  test("has prom-client's default process metrics and the gateway's own families", async () => {
    await post(gw, '/', ['ping']);
    const text = await scrape(gw);
    expect(metric(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(text).toMatch(/^# TYPE nodejs_eventloop_lag_seconds gauge$/m);
    expect(text).toMatch(/^nodejs_gc_duration_seconds_count|^# TYPE nodejs_gc_duration_seconds histogram$/m);
    expect(text).toMatch(/^# TYPE nodejs_active_handles(_total)? gauge$/m);
    expect(metric(text, 'gateway_http_requests_total', { route: '/', status: '200' })).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'gateway_commands_total', { command: 'ping' })).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'gateway_redis_up')).toBe(1);
    expect(text).toMatch(/^# TYPE gateway_request_duration_seconds histogram$/m);
  });

  test('two gateways in one process keep their counts apart', async () => {
    const other = await privateGateway();
    try {
      const before = metric(await scrape(gw), 'gateway_http_requests_total', { route: '/pipeline', status: '200' });
      await post(other, '/pipeline', [['ping']]);
      expect(metric(await scrape(other), 'gateway_http_requests_total', { route: '/pipeline', status: '200' })).toBe(1);
      expect(metric(await scrape(gw), 'gateway_http_requests_total', { route: '/pipeline', status: '200' })).toBe(before);
    } finally {
      await other.close();
    }
  });
});
