/**
 * GET /healthz through the real gateway and Redis, and the degraded answers when Redis cannot be
 * reached, plus the JSON answer of an unknown route. Failure cases call the Worker's default export
 * with an env of their own, so the shared isolate's client is left alone.
 */
import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, inject, test } from 'vitest';
import worker from '../../src/index.ts';

interface Health {
  status: string;
  redis: { ok: boolean; latencyMs?: number; error?: string };
}

async function healthz(overrides: Record<string, string | undefined>): Promise<{ res: Response; text: string }> {
  const ctx = createExecutionContext();
  // Missing secrets are the point of one test, so the merged env is not a complete Env.
  const res = await worker.fetch(new Request('http://x/healthz'), { ...env, ...overrides } as Env, ctx);
  await waitOnExecutionContext(ctx);
  return { res, text: await res.text() };
}

/** A degraded answer is JSON naming the failure, with no stack, URL or token in it. */
function expectDegraded(res: Response, text: string, error: string): void {
  expect(res.status, text).toBe(503);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  expect(JSON.parse(text) as Health).toEqual({ status: 'degraded', redis: { ok: false, error } });
  expect(text).not.toMatch(/\bat \S+:\d+|stack/i);
  expect(text).not.toContain(inject('gatewayToken'));
  expect(text).not.toContain('127.0.0.1');
}

describe('GET /healthz', () => {
  test('answers 200 with the latency when Redis answers PING through the gateway', async () => {
    const res = await exports.default.fetch('http://x/healthz');
    const text = await res.text();
    expect(res.status, text).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = JSON.parse(text) as Health;
    expect(body).toEqual({ status: 'ok', redis: { ok: true, latencyMs: expect.any(Number) } });
    expect(body.redis.latencyMs).toBeGreaterThanOrEqual(0);
  });

  test('answers 503 "unreachable" when nothing listens at the REST URL', async () => {
    const { res, text } = await healthz({ UPSTASH_REDIS_REST_URL: inject('closedUrl') });
    expectDegraded(res, text, 'unreachable');
  });

  test('answers 503 "rejected" when the gateway is up but its Redis is down', async () => {
    const { res, text } = await healthz({ UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') });
    expectDegraded(res, text, 'rejected');
  });

  test('answers 503 "rejected" when the token is wrong', async () => {
    const { res, text } = await healthz({ UPSTASH_REDIS_REST_TOKEN: 'not-the-token' });
    expectDegraded(res, text, 'rejected');
  });

  test('answers 503 "timeout" when Redis answers later than REDIS_TIMEOUT_MS', async () => {
    // The slow gateway waits 400 ms before every answer; the budget is a quarter of that.
    const { res, text } = await healthz({ UPSTASH_REDIS_REST_URL: inject('slowGatewayUrl'), REDIS_TIMEOUT_MS: '100' });
    expectDegraded(res, text, 'timeout');
  });

  test('answers 503 "config" when the secrets are missing', async () => {
    const { res, text } = await healthz({ UPSTASH_REDIS_REST_URL: undefined, UPSTASH_REDIS_REST_TOKEN: undefined });
    expectDegraded(res, text, 'config');
  });
});

describe('unknown routes', () => {
  test('answer 404 problem+json without a stack', async () => {
    const res = await exports.default.fetch('http://x/no/such/route?q=1', { method: 'POST' });
    const text = await res.text();
    expect(res.status, text).toBe(404);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(JSON.parse(text)).toMatchObject({ status: 404, code: 'not_found', instance: '/no/such/route' });
    expect(text).not.toMatch(/\bat \S+:\d+|stack/i);
  });
});
