/**
 * GET /events/inventory: Server-Sent Events relaying the inventory channel; a checkout's event
 * reaches the browser, and the subscription is released when the browser goes away.
 */
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { publishJson } from 'edge-redis/pubsub';
import { services } from '../../src/services.ts';
import { countTrips } from '../support/round-trips.ts';
import { checkout, createProduct, eventually, freshIp, gatewayUrl, keysOf, numsub, ownEnv, redis, withCart } from './checkout.support.ts';
import { inventoryEvents, openEvents, readUntil } from './events.support.ts';

const shop = ownEnv();

describe('GET /events/inventory', () => {
  it('streams a checkout\'s inventory event to the browser; cancelling releases the subscription', async () => {
    const ip = freshIp();
    const channel = keysOf(shop).key('events', 'inventory');
    const res = await openEvents(shop, ip);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('cache-control')).toMatch(/^no-cache/);
    expect(res.headers.getSetCookie()).toEqual([]);
    const reader = res.body!.getReader();
    const state = { text: '' };
    expect(await readUntil(reader, /retry: \d+\n\n/, state)).toBe('retry: 3000\n\n');
    expect(await numsub(channel)).toBe(1);

    const p = await createProduct(shop, { stock: 4 });
    const r = await checkout(shop, await withCart(shop, { [p]: 3 }), crypto.randomUUID(), ip);
    expect(r.status, r.text).toBe(201);
    await readUntil(reader, /event: inventory\n/, state);
    await readUntil(reader, /event: inventory\ndata: .*\n\n/, state);
    expect(inventoryEvents(state.text)).toEqual([{ type: 'inventory.changed', items: [{ productId: p, stock: 1 }], at: expect.any(Number) }]);

    await reader.cancel();
    await eventually(async () => (await numsub(channel)) === 0, 'the subscription is released');
  });

  it('through the Worker\'s real entry point too: a published event arrives, and a disconnect releases it', async () => {
    const channel = services(env).keys.key('events', 'inventory');
    const before = await numsub(channel);
    const res = await exports.default.fetch('http://shop.test/events/inventory', { headers: { 'cf-connecting-ip': freshIp() } });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const state = { text: '' };
    await readUntil(reader, /retry: \d+\n\n/, state);
    await eventually(async () => (await numsub(channel)) === before + 1, 'subscribed');
    const event = { type: 'inventory.changed', items: [{ productId: 1, stock: 41 }], at: Date.now() };
    expect(await publishJson(redis, channel, event)).toBeGreaterThanOrEqual(1);
    await readUntil(reader, /event: inventory\ndata: .*\n\n/, state);
    expect(inventoryEvents(state.text)).toEqual([event]);
    await reader.cancel();
    await eventually(async () => (await numsub(channel)) === before, 'the subscription is released');
  });

  it('round trips: the per-IP check (1) beside the one streaming /subscribe request', async () => {
    const ip = freshIp();
    await (await openEvents(shop, ip)).body!.cancel(); // warm: the limiter's script is loaded
    const { result, trips } = await countTrips(gatewayUrl, () => openEvents(shop, ip));
    expect(result.status).toBe(200);
    expect(trips.map((t) => `${t.path.replace(/^\/subscribe\/.*/, '/subscribe/<channel>')} ${t.commands.join(' ')}`.trim()).sort()).toEqual(['/pipeline evalsha', '/subscribe/<channel>']);
    expect(trips.every((t) => t.wave === 1)).toBe(true);
    await result.body!.cancel();
  });
});
