/**
 * `/favicon.ico`: every page a browser shows on this origin (/docs, /shop) makes it ask for one.
 * "No icon" (204, cached a day), answered before the rate limit: no Redis trip, and no 404 that
 * the browser would print as a console error.
 */
import { env } from 'cloudflare:workers';
import { expect, test } from 'vitest';
import { callWorker } from '../support/worker.ts';

test('GET /favicon.ico is 204, cacheable, and costs no Redis trip', async () => {
  const { res, status, text } = await callWorker(env, '/favicon.ico', { ip: '198.18.7.1' });
  expect(status).toBe(204);
  expect(text).toBe('');
  expect(res.headers.get('cache-control')).toBe('public, max-age=86400');
  expect(res.headers.get('server-timing')).toMatch(/^redis;dur=0;desc="0 trips, 0 commands"/);
  expect(res.headers.get('ratelimit-policy')).toBeNull(); // the limiter never ran
});
