/**
 * The Worker: assembles the app. Resource routes live in `./functions/*`, the per-env services in
 * `./services.ts` (the Redis patterns come from the `edge-redis` package, whose source is `./lib`),
 * app-wide middleware in `./middleware.ts`; every error leaves as problem+json through `./errors.ts`.
 */
import { Hono } from 'hono';
import type { AppEnv } from './env.ts';
import { notFound, onError } from './errors.ts';
import auth from './functions/auth.ts';
import cart from './functions/cart.ts';
import checkout from './functions/checkout.ts';
import docs from './functions/docs.ts';
import events from './functions/events.ts';
import health from './functions/health.ts';
import leaderboard from './functions/leaderboard.ts';
import { doc, openApiRoute } from './functions/openapi.ts';
import products from './functions/products.ts';
import { scheduled } from './functions/scheduled.ts';
import shop from './functions/shop.ts';
import { csrfGuard, defaultRateLimit, limitBody, observeRequest, provideServices, sessions } from './middleware.ts';

/** Exported for test/functions/openapi.test.ts, which checks that every route is documented. */
export const app = new Hono<AppEnv>();

app.onError(onError);
app.notFound(notFound);
// First, so every route (health and docs included) gets a request id, a Server-Timing header and a log line.
app.use(observeRequest);

app.route('/healthz', health);
app.get(
  '/openapi.json',
  doc({ tags: ['docs'], summary: 'This document (OpenAPI 3.1)', commonErrors: false, responses: { 200: { description: 'The OpenAPI document' } } }),
  openApiRoute(app, { title: 'edge-redis shop API', version: '1.0.0', description: 'The reference edge API: D1 as the source of truth, Redis in front.' }),
);
app.route('/docs', docs);
// Browsers ask for /favicon.ico on every origin they visit (the docs and shop pages): "no icon",
// answered here, before the rate limit, so it costs no Redis trip and logs no 404 in the console.
app.get('/favicon.ico', (c) => c.body(null, 204, { 'Cache-Control': 'public, max-age=86400' }));
// The shop's pages are static shells (no Redis, no session): before the per-request middleware.
app.route('/shop', shop);

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
