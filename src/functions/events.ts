/**
 * `GET /events/inventory`: Server-Sent Events relaying the inventory channel to a browser while its
 * request lives (edge-redis/pubsub). `POST /checkout` publishes `{ type: 'inventory.changed', items:
 * [{ productId, stock }], at }` there; each message arrives as `event: inventory`.
 *
 * Cost: one streaming HTTP request to the REST endpoint for the life of the stream (Upstash bills the
 * SUBSCRIBE and each message it delivers), beside the default per-IP check. If Redis cannot be
 * reached, 503 problem+json before the stream starts. The stream ends after 10 minutes and the
 * browser's EventSource reconnects (3 s later, as the stream's `retry:` asks).
 *
 * @example
 * const events = new EventSource('/events/inventory');
 * events.addEventListener('inventory', (e) => render(JSON.parse(e.data)));
 */
import { Hono } from 'hono';
import { z } from 'zod';
import type { AppEnv } from '../env.ts';
import { PubSubError, sseRelay, SSE_HEADERS } from 'edge-redis/pubsub';
import { createRedis } from 'edge-redis/redis';
import type { Services } from '../services.ts';
import { doc } from './openapi.ts';

/** The channel inventory changes are published on. */
export const inventoryChannel = ({ keys }: Pick<Services, 'keys'>): string => keys.key('events', 'inventory');

/** What an `inventory` event's data holds. */
export interface InventoryEvent {
  type: 'inventory.changed';
  items: { productId: number; stock: number }[];
  /** Epoch ms. */
  at: number;
}

const events = new Hono<AppEnv>();

events.get('/inventory', doc({
  tags: ['events'], summary: 'Live inventory changes (Server-Sent Events)',
  description: 'A `text/event-stream`: `event: inventory` with `data: {"type":"inventory.changed","items":[{"productId":7,"stock":2}],"at":…}` per change, a `: keepalive` comment every 15 s. Ends after 10 minutes; EventSource reconnects.',
  responses: {
    200: {
      description: 'The event stream',
      contentType: 'text/event-stream',
      body: z.string().describe('event: inventory\\ndata: <InventoryEvent JSON>\\n\\n, repeated'),
    },
  },
}), async (c) => {
  let redis;
  try {
    // A plain client: the subscription is a long-lived stream, not a batched command.
    redis = createRedis(c.env);
  } catch (cause) {
    throw new PubSubError('subscribe', { cause });
  }
  const stream = await sseRelay(redis, inventoryChannel(c.var.services), { event: 'inventory' });
  return c.body(stream, 200, SSE_HEADERS);
});

export default events;
