/**
 * src/lib/writebehind.ts when Redis forgets, on a private Redis of this file (test/support/faults.ts).
 * The store is the in-memory stand-in of src/functions/views.ts's D1 side (an entry applied once,
 * remembered with its batch seq), read the way views.ts reads: snapshot first, then the store minus
 * what the snapshot still counts. The README's invariants: a read is never below what the store
 * held when it began, never above what was enqueued, and the store never applies an entry twice;
 * what may be lost is entries not drained yet (and, until drained, their count).
 */
import { Redis } from '@upstash/redis/cloudflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWriteBehind, SCRIPTS, type Batch, type WriteBehind, type WriteBehindRedis } from 'edge-redis/writebehind';
import { keySchema } from 'edge-redis/keys';
import { privateRedis, type PrivateRedis } from '../support/faults.ts';

let lab: PrivateRedis;
let redis: Redis;
beforeAll(async () => {
  lab = await privateRedis();
  redis = new Redis({ url: lab.bindings.UPSTASH_REDIS_REST_URL, token: lab.bindings.UPSTASH_REDIS_REST_TOKEN });
});
afterAll(() => lab?.stop());

function setup(client: WriteBehindRedis = redis) {
  const q = createWriteBehind({ redis: client, keys: keySchema({ app: `t${crypto.randomUUID().slice(0, 8)}`, env: 'test' }), name: 'q' });
  return { q, stream: q.keys.stream, keys: q.keys };
}

function memoryStore() {
  const applied = new Map<string, { p: string; seq: number }>();
  const views = new Map<string, number>();
  return {
    applied,
    count: (p: string) => views.get(p) ?? 0,
    apply(b: Batch) {
      for (const e of b.entries) {
        if (applied.has(e.id)) continue;
        const p = e.fields['p'] ?? '';
        applied.set(e.id, { p, seq: b.seq });
        views.set(p, (views.get(p) ?? 0) + 1);
      }
    },
  };
}
type Store = ReturnType<typeof memoryStore>;

async function read(q: WriteBehind, store: Store, p: string): Promise<number> {
  const { seq, pending } = await q.snapshot([p]);
  const inFlight = new Set(pending[0]!.inFlight);
  let unsettled = 0;
  for (const [id, a] of store.applied) if (a.p === p && (a.seq > seq || inFlight.has(id))) unsettled++;
  return store.count(p) - unsettled + pending[0]!.count;
}

/** A client whose ack fails while `on`: a crash between the store's commit and the ack. */
function failingAcks() {
  let on = true;
  const client: WriteBehindRedis = {
    evalsha: ((sha: string, k: string[], a: unknown[]) => (on && sha === SCRIPTS.ack.sha ? Promise.reject(new Error('connection lost')) : redis.evalsha(sha, k, a))) as WriteBehindRedis['evalsha'],
    eval: ((src: string, k: string[], a: unknown[]) => (on && src === SCRIPTS.ack.src ? Promise.reject(new Error('connection lost')) : redis.eval(src, k, a))) as WriteBehindRedis['eval'],
    evalshaRo: redis.evalshaRo.bind(redis) as WriteBehindRedis['evalshaRo'],
    evalRo: redis.evalRo.bind(redis) as WriteBehindRedis['evalRo'],
  };
  return { client, off: () => (on = false) };
}

const drainInto = (q: WriteBehind, store: Store, claimIdleMs = 60_000) => q.drain({ group: 'g', consumer: 'c', claimIdleMs, handler: (b) => store.apply(b) });

/** The three states a key can be lost in: entries waiting, a batch applied but not acked, all drained. */
async function scenario(stage: 'waiting' | 'unacked' | 'drained', lose: (keys: ReturnType<typeof setup>['keys']) => Promise<unknown>) {
  const faulty = failingAcks();
  const { q, keys } = setup(faulty.client);
  const store = memoryStore();
  for (let i = 0; i < 6; i++) await q.enqueue({ p: 'a' }, { tally: 'a' });
  if (stage !== 'waiting') await drainInto(q, store).catch(() => undefined); // applied; ack lost
  if (stage === 'drained') {
    faulty.off();
    await drainInto(q, store, 0);
  }
  faulty.off();
  const before = store.count('a');
  expect(await read(q, store, 'a')).toBe(6);
  await lose(keys);
  const after = await read(q, store, 'a');
  expect(after, `${stage}: never below the store`).toBeGreaterThanOrEqual(before);
  expect(after, `${stage}: never above what was enqueued`).toBeLessThanOrEqual(6);
  // More traffic, and the drains catch up: the store applied each entry at most once, and the read is exact again.
  for (let i = 0; i < 3; i++) await q.enqueue({ p: 'a' }, { tally: 'a' });
  expect(await read(q, store, 'a')).toBeGreaterThanOrEqual(before + 3);
  await drainInto(q, store, 0);
  expect(store.applied.size).toBe(store.count('a'));
  expect(store.count('a')).toBeLessThanOrEqual(9);
  expect(await read(q, store, 'a')).toBe(store.count('a'));
  return { store };
}

describe('each key deleted alone, at each stage', () => {
  for (const stage of ['waiting', 'unacked', 'drained'] as const) {
    for (const key of ['stream', 'tally', 'seq', 'dlq'] as const) {
      it(`${key} deleted with the entries ${stage}`, async () => {
        await scenario(stage, (keys) => lab.del(keys[key]));
      });
    }
  }

  it('the tally lost while entries wait: they are not counted until drained, then counted once (store), never twice', async () => {
    const { store } = await scenario('waiting', (keys) => lab.del(keys.tally));
    expect(store.count('a')).toBe(9); // nothing was lost with the tally: the entries were still there
  });

  it('the stream lost with a batch unacked: the store keeps what it applied, the read is the store + what came after', async () => {
    const { store } = await scenario('unacked', (keys) => lab.del(keys.stream));
    expect(store.count('a')).toBe(9);
  });
});

describe('flushed, restarted, evicted at random', () => {
  it('FLUSHALL between the store\'s commit and the ack: never below the store, nothing applied twice', async () => {
    await scenario('unacked', () => lab.flushall());
  });

  it('Redis restarted empty in the middle of a drain (inside the handler, after the store applied): the drain ends, the read is the store', async () => {
    const { q } = setup();
    const store = memoryStore();
    for (let i = 0; i < 5; i++) await q.enqueue({ p: 'b' }, { tally: 'b' });
    const report = await q.drain({ group: 'g', consumer: 'c', handler: async (b) => {
      store.apply(b);
      await lab.restart();
    } });
    expect(report).toMatchObject({ batches: 1, acked: 0 });
    expect(store.count('b')).toBe(5);
    expect(await read(q, store, 'b')).toBe(5);
    await q.enqueue({ p: 'b' }, { tally: 'b' });
    await drainInto(q, store);
    expect(await read(q, store, 'b')).toBe(6);
    expect(store.count('b')).toBe(6);
  });

  it('a random share of every key deleted again and again while enqueues, drains and reads run: every read between the store and what was enqueued', { timeout: 60_000 }, async () => {
    const { q } = setup();
    const store = memoryStore();
    let enqueued = 0;
    let running = true;
    const wrong: string[] = [];
    const stop = await lab.chaos(0.3, 10);
    try {
      const writer = (async () => {
        for (let i = 0; i < 300; i++) {
          await q.enqueue({ p: 'c' }, { tally: 'c' });
          enqueued++;
        }
        running = false;
      })();
      const drainer = (async () => {
        while (running) {
          await drainInto(q, store, 0).catch(() => undefined);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      const reader = (async () => {
        while (running) {
          const floor = store.count('c');
          const v = await read(q, store, 'c');
          const ceiling = enqueued + 1; // an enqueue in flight may be counted already
          if (v < floor || v > ceiling) wrong.push(`${v} not in [${floor}, ${ceiling}]`);
        }
      })();
      await Promise.all([writer, drainer, reader]);
    } finally {
      expect((await stop()).rounds).toBeGreaterThan(0);
    }
    expect(wrong).toEqual([]);
    await drainInto(q, store, 0);
    expect(store.applied.size).toBe(store.count('c')); // each entry applied at most once
    expect(store.count('c')).toBeLessThanOrEqual(300);
    expect(await read(q, store, 'c')).toBe(store.count('c'));
  });
});
