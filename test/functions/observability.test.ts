/**
 * The Worker's observability (src/middleware.ts observeRequest): a request id echoed or minted,
 * a Server-Timing header with the Redis round trips and commands the request spent (checked
 * against the trips actually sent to the gateway), and one JSON log line per request.
 */
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { countTrips } from '../support/round-trips.ts';
import { callWorker } from '../support/worker.ts';
import { freshIp, shopEnv } from './auth.support.ts';

const timing = (res: Response) => {
  const h = res.headers.get('server-timing') ?? '';
  const m = /redis;dur=([\d.]+);desc="(\d+) trips, (\d+) commands"/.exec(h);
  return m ? { ms: Number(m[1]), trips: Number(m[2]), commands: Number(m[3]), header: h } : { header: h };
};

/** console.log lines written while the test runs, parsed as JSON where they are. */
function captureLog(): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    try {
      lines.push(JSON.parse(args.map(String).join(' ')) as Record<string, unknown>);
    } catch {
      // not a structured line
    }
  });
  return lines;
}

afterEach(() => vi.restoreAllMocks());

describe('request observation', () => {
  it('mints a request id, and echoes a sane one the caller sent', async () => {
    const a = await callWorker(shopEnv, '/products/1', { ip: freshIp() });
    expect(a.res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const b = await callWorker(shopEnv, '/products/1', { ip: freshIp(), headers: { 'x-request-id': 'edge-abc_123' } });
    expect(b.res.headers.get('x-request-id')).toBe('edge-abc_123');
    const c = await callWorker(shopEnv, '/products/1', { ip: freshIp(), headers: { 'x-request-id': 'bad id with spaces' } });
    expect(c.res.headers.get('x-request-id')).not.toBe('bad id with spaces');
  });

  it('Server-Timing counts the round trips and commands the request sent', async () => {
    const ip = freshIp();
    await callWorker(shopEnv, '/products?limit=5', { ip }); // warm the cache and the scripts
    // Routes with no waitUntil work: every trip the gateway saw is in the header.
    for (const path of ['/products?limit=5', '/healthz']) {
      const counted = await countTrips(env.UPSTASH_REDIS_REST_URL, () => callWorker(shopEnv, path, { ip }));
      const t = timing(counted.result.res);
      expect(counted.result.status, path).toBe(200);
      expect(t.trips, `${path}: ${t.header}`).toBeGreaterThan(0);
      expect(t.trips, path).toBe(counted.count);
      expect(t.commands, path).toBe(counted.commands.length);
      expect(t.ms).toBeGreaterThanOrEqual(0);
    }
    // A product page counts its view in waitUntil, after the response: the header has the rest.
    const counted = await countTrips(env.UPSTASH_REDIS_REST_URL, () => callWorker(shopEnv, '/products/2', { ip }));
    const t = timing(counted.result.res);
    expect(t.trips).toBeGreaterThan(0);
    expect(t.trips).toBeLessThan(counted.count);
  });

  it('a route that does not touch Redis reports zero', async () => {
    const r = await callWorker(shopEnv, '/openapi.json', { ip: freshIp() });
    expect(timing(r.res)).toMatchObject({ trips: 0, commands: 0 });
  });

  it('writes one JSON log line per request with its id, route, status and Redis spend, and no path values', async () => {
    const lines = captureLog();
    const r = await callWorker(shopEnv, '/products/3?secret=hunter2', { ip: freshIp(), headers: { 'x-request-id': 'log-test-1' } });
    expect(r.status).toBe(200);
    const mine = lines.filter((l) => l['msg'] === 'request' && l['requestId'] === 'log-test-1');
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ method: 'GET', route: '/products/:id', status: 200 });
    const redis = mine[0]!['redis'] as Record<string, number>;
    expect(redis['trips']).toBe(timing(r.res).trips);
    expect(redis['failed']).toBe(0);
    expect(JSON.stringify(mine[0])).not.toContain('hunter2');
  });

  it('counts failed trips when Redis is down', async () => {
    const lines = captureLog();
    const down: Env = { ...shopEnv, UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') };
    const r = await callWorker(down, '/healthz', { ip: freshIp(), headers: { 'x-request-id': 'log-down-1' } });
    expect(r.status).toBe(503);
    const mine = lines.find((l) => l['requestId'] === 'log-down-1');
    expect(mine?.['redis']).toMatchObject({ trips: 1, failed: 1 });
  });
});
