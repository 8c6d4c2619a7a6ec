/**
 * `GET /healthz`: liveness with a real Redis round trip (one PING through the REST endpoint). 503
 * tells a load balancer or monitor that Redis is out of reach; the body names the kind of failure
 * only, since client errors quote commands and the log is the place for details. src/index.ts
 * mounts it before the rate limit and the session, so a monitor is never limited and never costs
 * more than the PING.
 */
import { Hono } from 'hono';
import { z } from 'zod';
import { classifyRedisError, createRedis, type RedisFailure } from 'edge-redis/redis';
import type { AppEnv } from '../env.ts';
import { countRedis } from '../services.ts';
import { doc } from './openapi.ts';

const Healthy = z.object({ status: z.literal('ok'), redis: z.object({ ok: z.literal(true), latencyMs: z.number() }) });
const Degraded = z.object({
  status: z.literal('degraded'),
  redis: z.object({ ok: z.literal(false), error: z.enum(['config', 'timeout', 'unreachable', 'rejected', 'unknown'] satisfies RedisFailure[]) }),
});

const health = new Hono<AppEnv>();

health.get('/', doc({
  summary: 'Liveness, with one PING to Redis', tags: ['operations'], commonErrors: false,
  responses: { 200: { description: 'Redis answered PONG', body: Healthy }, 503: { description: 'Redis is out of reach', body: Degraded, contentType: 'application/json' } },
}), async (c) => {
  c.header('Cache-Control', 'no-store');
  const degraded = (error: RedisFailure) => c.json({ status: 'degraded', redis: { ok: false, error } } as const, 503);
  const started = Date.now();
  let reply: string;
  try {
    reply = await createRedis(c.env, { observe: countRedis }).ping();
  } catch (err) {
    const kind = classifyRedisError(err);
    console.error(`[healthz] redis check failed: ${kind} (${err instanceof Error ? err.name : typeof err})`);
    return degraded(kind);
  }
  if (reply !== 'PONG') {
    console.error('[healthz] redis check failed: PING did not answer PONG');
    return degraded('rejected');
  }
  return c.json({ status: 'ok', redis: { ok: true, latencyMs: Date.now() - started } } as const, 200);
});

export default health;
