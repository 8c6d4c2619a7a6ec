/**
 * GET /events/inventory, security: the channel is fixed (no client-chosen channel), the stream
 * carries no cookie, and a rate-limited request leaves no subscription behind.
 */
import { describe, expect, it } from 'vitest';
import { call, eventually, expectProblem, freshIp, keysOf, numsub, ownEnv } from './checkout.support.ts';
import { openEvents, readUntil } from './events.support.ts';

const shop = ownEnv();

describe('GET /events/inventory security', () => {
  it('the client cannot pick another channel: query and path tricks reach the inventory channel or nothing', async () => {
    const ip = freshIp();
    const channel = keysOf(shop).key('events', 'inventory');
    const res = await call(shop, '/events/inventory/..%2Fproducts', { ip });
    expectProblem(res, 404, 'not_found');
    const stream = await openEvents(shop, ip);
    const other = await openEvents(shop, ip, {}, `?channel=${encodeURIComponent(keysOf(shop).key('events', 'products'))}`);
    expect(other.status).toBe(200);
    await eventually(async () => (await numsub(channel)) === 2, 'both relays are on the inventory channel');
    await Promise.all([stream.body!.cancel(), other.body!.cancel()]);
    await eventually(async () => (await numsub(channel)) === 0, 'released');
  });

  it('a request refused by the rate limit (429) leaves no subscription behind', async () => {
    const limited = { ...shop, REDIS_KEY_APP: `e${crypto.randomUUID().slice(0, 8)}`, API_RATE_LIMIT: '1' };
    const channel = keysOf(limited).key('events', 'inventory');
    const ip = freshIp();
    const first = await openEvents(limited, ip);
    expect(first.status).toBe(200);
    const reader = first.body!.getReader();
    await readUntil(reader, /retry:/);
    const second = await openEvents(limited, ip);
    expect(second.status).toBe(429);
    await reader.cancel();
    // The refused request's relay was never read: it lets go by itself (unreadTimeoutMs, 10 s).
    await eventually(async () => (await numsub(channel)) === 0, 'no subscription left', 15_000);
  }, 20_000);
});
