/**
 * The Worker: assembles the app. Resource routes live in `./functions/*`, the per-env services in
 * `./services.ts` (the Redis patterns come from the `edge-redis` package, whose source is `./lib`),
 * app-wide middleware in `./middleware.ts`; every error leaves as problem+json through `./errors.ts`.
 */
import { Hono } from 'hono';
import { classifyRedisError, createRedis, type RedisFailure } from 'edge-redis/redis';
import type { AppEnv } from './env.ts';
import { notFound, onError } from './errors.ts';
import auth from './functions/auth.ts';
import cart from './functions/cart.ts';
import checkout from './functions/checkout.ts';
import events from './functions/events.ts';
import leaderboard from './functions/leaderboard.ts';
import { docsPage, openApiRoute } from './functions/openapi.ts';
import products from './functions/products.ts';
import { scheduled } from './functions/scheduled.ts';
import { csrfGuard, defaultRateLimit, limitBody, observeRequest, provideServices, sessions } from './middleware.ts';
import { countRedis } from './services.ts';

const app = new Hono<AppEnv>();

app.onError(onError);
app.notFound(notFound);
// First, so every route (health and docs included) gets a request id, a Server-Timing header and a log line.
app.use(observeRequest);

/**
 * Liveness with a real Redis round trip (one PING through the REST endpoint). 503 tells a load
 * balancer or monitor that Redis is out of reach; the body names the kind of failure only, since
 * client errors quote commands and the log is the place for details. Mounted before the rate limit
 * and the session so a monitor is never limited and never costs more than the PING.
 */
app.get('/healthz', async (c) => {
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

app.get('/openapi.json', openApiRoute(app, { title: 'edge-redis shop API', version: '1.0.0', description: 'The reference edge API: D1 as the source of truth, Redis in front.' }));
app.get('/docs', (c) => c.html(docsPage('/openapi.json')));

app.use(limitBody, csrfGuard, provideServices, defaultRateLimit, sessions);
app.route('/checkout', checkout);
app.route('/leaderboard', leaderboard);
app.route('/events', events);
app.route('/products', products);
app.route('/auth', auth);
app.route('/cart', cart);

export default {
  fetch: app.fetch,
  scheduled,
} satisfies ExportedHandler<Env>;
