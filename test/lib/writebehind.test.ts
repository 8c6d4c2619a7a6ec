/**
 * src/lib/writebehind.ts against the real Redis through the gateway: enqueue, drain (ack only after
 * the handler, redelivery, reclaim of idle entries, dead letters), the exact "store + pending" read
 * across every step of a flush, crashes between the store's commit and the ack, and round trips.
 * The store is a small in-memory stand-in with the same idempotency rule as the D1 side
 * (src/functions/views.ts): an entry id is applied once, remembered with its batch seq.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { createWriteBehind, SCRIPTS, WriteBehindError, type Batch, type WriteBehind, type WriteBehindOptions, type WriteBehindRedis } from 'edge-redis/writebehind';
import { keySchema } from 'edge-redis/keys';
import { countTrips } from '../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });

const sha1 = async (s: string) =>
  Array.from(new Uint8Array(await crypto.subtle.digest('SHA-1', new TextEncoder().encode(s))), (b) => b.toString(16).padStart(2, '0')).join('');

function setup(options: Partial<WriteBehindOptions> = {}) {
  const keys = keySchema({ app: `t${crypto.randomUUID().slice(0, 8)}`, env: 'test' });
  const q = createWriteBehind({ redis, keys, name: 'q', ...options });
  const stream = keys.slotted('wb', 'q');
  expect(q.keys.stream).toBe(stream);
  return { q, keys, stream, dlq: `${stream}:dlq`, tally: `${stream}:tally`, seq: `${stream}:seq` };
}

/** The D1 side in miniature: views per product, and every applied entry with its batch seq. */
function memoryStore() {
  const views = new Map<string, number>();
  const applied = new Map<string, { p: string; seq: number }>();
  return {
    views,
    applied,
    apply(b: Batch) {
      for (const e of b.entries) {
        const p = e.fields['p'] ?? '';
        if (applied.has(e.id)) continue;
        applied.set(e.id, { p, seq: b.seq });
        views.set(p, (views.get(p) ?? 0) + 1);
      }
    },
  };
}
type Store = ReturnType<typeof memoryStore>;

/** The reader of src/functions/views.ts: snapshot first, then the store minus what the snapshot still counts. */
async function exactViews(q: WriteBehind, store: Store, p: string): Promise<number> {
  const { seq, pending } = await q.snapshot([p]);
  const mine = pending[0]!;
  const inFlight = new Set(mine.inFlight);
  let unsettled = 0;
  for (const [id, a] of store.applied) if (a.p === p && (a.seq > seq || inFlight.has(id))) unsettled++;
  return (store.views.get(p) ?? 0) - unsettled + mine.count;
}

/** A real client whose ack script fails while `failing` is true: the "crash between commit and ack". */
function failingAcks(): { client: WriteBehindRedis; set(on: boolean): void } {
  let failing = true;
  const client: WriteBehindRedis = {
    evalsha: ((sha: string, keys: string[], args: unknown[]) =>
      failing && sha === SCRIPTS.ack.sha ? Promise.reject(new Error('connection lost')) : redis.evalsha(sha, keys, args)) as WriteBehindRedis['evalsha'],
    eval: redis.eval.bind(redis) as WriteBehindRedis['eval'],
    evalshaRo: redis.evalshaRo.bind(redis) as WriteBehindRedis['evalshaRo'],
    evalRo: redis.evalRo.bind(redis) as WriteBehindRedis['evalRo'],
  };
  return { client, set: (on) => (failing = on) };
}

const handlerFails = () => {
  throw new Error('store down');
};

beforeAll(async () => {
  // Warm EVALSHA, so the round-trip counts below are exact.
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

describe('scripts and construction', () => {
  it('pins each SHA: sha1(src) and SCRIPT LOAD agree with the exported constant', async () => {
    expect(Object.keys(SCRIPTS).sort()).toEqual(['ack', 'claim', 'enqueue', 'snapshot']);
    for (const [name, { src, sha }] of Object.entries(SCRIPTS)) {
      expect(await sha1(src), name).toBe(sha);
      expect(await redis.scriptLoad(src), name).toBe(sha);
    }
  });

  it('does no I/O when built, and refuses bad options and reserved fields', async () => {
    const { trips } = await countTrips(url, async () => createWriteBehind({ redis, keys: keySchema(), name: 'y' }));
    expect(trips).toEqual([]);
    expect(() => createWriteBehind({ redis, keys: keySchema(), name: 'x', maxLen: 0 })).toThrow(RangeError);
    const { q } = setup();
    await expect(q.enqueue({ _t: 'x' })).rejects.toThrow(TypeError);
    await expect(q.enqueue({})).rejects.toThrow(TypeError);
    await expect(q.enqueue({ p: 1 }, { tally: '' })).rejects.toThrow(TypeError);
    await expect(q.drain({ group: 'g', consumer: 'c', handler: () => undefined, batchSize: 0 })).rejects.toThrow(RangeError);
  });
});

describe('enqueue', () => {
  it('is one round trip: XADD with the tally field, and the tally counted in the same script', async () => {
    const { q, stream, tally } = setup();
    const { result: id, trips } = await countTrips(url, () => q.enqueue({ p: 42, note: 'x' }, { tally: '42' }));
    expect(trips.map((t) => t.commands)).toEqual([['evalsha']]);
    expect(id).toMatch(/^\d+-\d+$/);
    expect(await redis.xrange(stream, '-', '+')).toEqual({ [id]: { _t: 42, p: 42, note: 'x' } });
    expect(await redis.hget(tally, '42')).toBe(1);
    await q.enqueue({ p: 43 }); // no tally
    // `_e`: the first entry this tally counts (entries before it, from a lost tally, are not in it).
    expect(await redis.hgetall(tally)).toEqual({ '42': 1, _e: id });
  });

  it('caps the stream with MAXLEN ~', async () => {
    const { q, stream } = setup({ maxLen: 10 });
    for (let i = 0; i < 3; i++) await Promise.all(Array.from({ length: 100 }, (_, j) => q.enqueue({ n: i * 100 + j })));
    const len = await redis.xlen(stream);
    expect(len).toBeGreaterThanOrEqual(10);
    expect(len).toBeLessThan(300);
  });
});

describe('drain', () => {
  it('hands batches over in order, acks each after its handler, and costs batches + 1 round trips', async () => {
    const { q, tally, stream } = setup();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await q.enqueue({ p: i % 2 }, { tally: String(i % 2) }));
    const batches: Batch[] = [];
    const { result: report, trips } = await countTrips(url, () =>
      q.drain({ group: 'g', consumer: 'c', batchSize: 2, handler: (b) => void batches.push(b) }),
    );
    expect(batches.map((b) => b.entries.map((e) => e.id))).toEqual([ids.slice(0, 2), ids.slice(2, 4), ids.slice(4)]);
    expect(batches[0]?.entries[0]).toEqual({ id: ids[0], fields: { p: '0' }, deliveries: 1, tally: '0' });
    const seqs = batches.map((b) => b.seq);
    expect(seqs[1]! > seqs[0]! && seqs[2]! > seqs[1]!).toBe(true);
    expect(report).toEqual({ batches: 3, acked: 5, deadLettered: [], redelivered: 0 });
    // claim | ack+claim | ack+claim | ack
    expect(trips.map((t) => t.commands)).toEqual([['evalsha'], ['evalsha', 'evalsha'], ['evalsha', 'evalsha'], ['evalsha']]);
    expect(await redis.hgetall(tally)).toEqual({ _e: ids[0] }); // nothing counted any more
    expect(await redis.xpending(stream, 'g', '-', '+', 10)).toEqual([]);
    expect(await redis.xlen(stream)).toBe(0); // acked entries are deleted: the stream is the backlog

    // Nothing left: one round trip, no handler call.
    const empty = await countTrips(url, () => q.drain({ group: 'g', consumer: 'c', handler: handlerFails }));
    expect(empty.result).toEqual({ batches: 0, acked: 0, deadLettered: [], redelivered: 0 });
    expect(empty.count).toBe(1);
  });

  it('stops at maxBatches and leaves the rest for the next drain', async () => {
    const { q } = setup();
    for (let i = 0; i < 5; i++) await q.enqueue({ p: i });
    const seen: string[] = [];
    const handler = (b: Batch) => void seen.push(...b.entries.map((e) => e.fields['p'] ?? ''));
    expect(await q.drain({ group: 'g', consumer: 'c', batchSize: 2, maxBatches: 1, handler })).toMatchObject({ batches: 1, acked: 2 });
    expect(await q.drain({ group: 'g', consumer: 'c', batchSize: 2, maxBatches: 5, handler })).toMatchObject({ batches: 2, acked: 3 });
    expect(seen).toEqual(['0', '1', '2', '3', '4']);
  });

  it('drains until the stream is empty by default (no batch cap): 60 entries in 30 batches of 2, one drain', async () => {
    const { q, stream } = setup();
    await Promise.all(Array.from({ length: 60 }, (_, i) => q.enqueue({ p: i })));
    const report = await q.drain({ group: 'g', consumer: 'c', batchSize: 2, handler: () => undefined });
    expect(report).toMatchObject({ batches: 30, acked: 60 });
    expect(await redis.xlen(stream)).toBe(0);
  });

  it('budgetMs: once spent, no new batch is claimed (the one in hand is stored and acked); the next drain goes on', async () => {
    const { q } = setup();
    for (let i = 0; i < 6; i++) await q.enqueue({ p: i });
    const slow = async () => void (await new Promise((r) => setTimeout(r, 30)));
    expect(await q.drain({ group: 'g', consumer: 'c', batchSize: 2, budgetMs: 10, handler: slow })).toMatchObject({ batches: 1, acked: 2 });
    expect(await q.drain({ group: 'g', consumer: 'c', batchSize: 2, handler: slow })).toMatchObject({ batches: 2, acked: 4 });
  });

  it('a failing handler leaves its batch pending, counted and in flight; the next drain redelivers it once idle', async () => {
    const { q, stream, tally } = setup();
    const ids = [await q.enqueue({ p: 7 }, { tally: '7' }), await q.enqueue({ p: 7 }, { tally: '7' })];
    const err = await q.drain({ group: 'g', consumer: 'c', handler: handlerFails }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WriteBehindError);
    expect(err).toMatchObject({ code: 'handler', op: 'drain', report: { batches: 0, acked: 0 } });
    expect((err as Error).cause).toMatchObject({ message: 'store down' });
    expect((await redis.xpending(stream, 'g', '-', '+', 10)).map((p) => (p as unknown[])[0])).toEqual(ids);
    expect(await redis.hget(tally, '7')).toBe(2);
    expect((await q.snapshot(['7'])).pending).toEqual([{ count: 2, inFlight: ids }]);

    // Not idle long enough yet: a drain with the default claimIdleMs does not take them.
    const store = memoryStore();
    expect(await q.drain({ group: 'g', consumer: 'c', handler: (b) => store.apply(b) })).toMatchObject({ batches: 0, acked: 0 });
    expect(store.applied.size).toBe(0);

    const again: Batch[] = [];
    const report = await q.drain({ group: 'g', consumer: 'c', claimIdleMs: 0, handler: (b) => void again.push(b) });
    expect(again.flatMap((b) => b.entries.map((e) => [e.id, e.deliveries]))).toEqual([[ids[0], 2], [ids[1], 2]]);
    expect(report).toEqual({ batches: 1, acked: 2, deadLettered: [], redelivered: 2 });
    expect(await redis.hget(tally, '7')).toBeNull();
    expect(await redis.xpending(stream, 'g', '-', '+', 10)).toEqual([]);
  });

  it('a crash after the store committed but before the ack counts nothing twice, at any moment', async () => {
    const { keys, stream, tally } = setup();
    const faulty = failingAcks();
    const q = createWriteBehind({ redis: faulty.client, keys, name: 'q' });
    const store = memoryStore();
    for (let i = 0; i < 4; i++) await q.enqueue({ p: 'a' }, { tally: 'a' });
    expect(await exactViews(q, store, 'a')).toBe(4);

    const err = await q.drain({ group: 'g', consumer: 'c', handler: (b) => store.apply(b) }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'WriteBehindError', code: 'unavailable', report: { batches: 1, acked: 0 } });
    // Both sides hold the 4 views now: the store applied them, Redis still counts them as pending.
    expect(store.views.get('a')).toBe(4);
    expect(await redis.hget(tally, 'a')).toBe(4);
    expect(await exactViews(q, store, 'a')).toBe(4);

    faulty.set(false);
    await q.enqueue({ p: 'a' }, { tally: 'a' });
    const report = await q.drain({ group: 'g', consumer: 'c', claimIdleMs: 0, handler: (b) => store.apply(b) });
    expect(report).toMatchObject({ batches: 1, acked: 5, redelivered: 4 });
    expect(store.views.get('a')).toBe(5); // the redelivered 4 were not applied again
    expect(await redis.hget(tally, 'a')).toBeNull();
    expect(await exactViews(q, store, 'a')).toBe(5);
    expect(await redis.xpending(stream, 'g', '-', '+', 10)).toEqual([]);
  });

  it('the read is exact between the commit and the ack, and for a snapshot taken before the claim', async () => {
    const { q } = setup();
    const store = memoryStore();
    for (let i = 0; i < 3; i++) await q.enqueue({ p: 'b' }, { tally: 'b' });
    const early = await q.snapshot(['b']);
    const during: number[] = [];
    await q.drain({
      group: 'g',
      consumer: 'c',
      handler: async (b) => {
        during.push(await exactViews(q, store, 'b'));
        store.apply(b);
        during.push(await exactViews(q, store, 'b'));
      },
    });
    expect(during).toEqual([3, 3]);
    expect(await exactViews(q, store, 'b')).toBe(3);
    // A reader that took its snapshot before the claim and reads the store after the commit.
    const inFlight = new Set(early.pending[0]!.inFlight);
    const unsettled = [...store.applied].filter(([id, a]) => a.p === 'b' && (a.seq > early.seq || inFlight.has(id))).length;
    expect((store.views.get('b') ?? 0) - unsettled + early.pending[0]!.count).toBe(3);
  });

  it('dead-letters an entry delivered more than maxDeliveries times, then carries on with the rest', async () => {
    const { q, dlq, tally, stream } = setup();
    const bad = await q.enqueue({ p: 'poison' }, { tally: 'x' });
    const good = await q.enqueue({ p: 'fine' }, { tally: 'x' });
    const handler = (b: Batch) => {
      if (b.entries.some((e) => e.fields['p'] === 'poison')) throw new Error('cannot apply');
      stored.push(...b.entries.map((e) => e.id));
    };
    const stored: string[] = [];
    const opts = { group: 'g', consumer: 'c', batchSize: 1, maxDeliveries: 2, claimIdleMs: 0, handler };
    await expect(q.drain(opts)).rejects.toMatchObject({ code: 'handler' }); // delivery 1
    await expect(q.drain(opts)).rejects.toMatchObject({ code: 'handler' }); // delivery 2
    const report = await q.drain(opts); // would be delivery 3: dead-lettered instead
    expect(report).toMatchObject({ deadLettered: [bad], acked: 1 });
    expect(stored).toEqual([good]);
    const letters = await redis.xrange(dlq, '-', '+');
    expect(Object.values(letters)).toEqual([{ _id: bad, _deliveries: 3, _t: 'x', p: 'poison' }]);
    expect(await redis.hget(tally, 'x')).toBeNull();
    expect(await redis.xpending(stream, 'g', '-', '+', 10)).toEqual([]);
  });

  it('releases pending entries trimmed out of the stream (their tally and in-flight record)', async () => {
    const { q, stream, tally } = setup({ maxLen: 1 });
    const id = await q.enqueue({ p: 1 }, { tally: 't' });
    await expect(q.drain({ group: 'g', consumer: 'c', handler: handlerFails })).rejects.toThrow(WriteBehindError);
    expect((await q.snapshot(['t'])).pending).toEqual([{ count: 1, inFlight: [id] }]);
    const next = await q.enqueue({ p: 2 }, { tally: 't' }); // over maxLen: the oldest entry is trimmed
    expect(Object.keys(await redis.xrange(stream, '-', '+'))).toEqual([next]);
    expect((await q.snapshot(['t'])).pending).toEqual([{ count: 1, inFlight: [] }]);
    const seen: string[] = [];
    const report = await q.drain({ group: 'g', consumer: 'c', claimIdleMs: 0, handler: (b) => void seen.push(...b.entries.map((e) => e.id)) });
    expect(report).toMatchObject({ batches: 1, acked: 1 });
    expect(seen).toEqual([next]);
    expect(await redis.hgetall(tally)).toEqual({ _e: id });
    expect(await redis.xpending(stream, 'g', '-', '+', 10)).toEqual([]);
  });

  it('an aborted drain stops before acking: the batch stays pending for the next one', async () => {
    const { q, stream } = setup();
    await q.enqueue({ p: 1 });
    const ctrl = new AbortController();
    const report = await q.drain({ group: 'g', consumer: 'c', signal: ctrl.signal, handler: () => ctrl.abort() });
    expect(report).toMatchObject({ batches: 1, acked: 0 });
    expect(await redis.xpending(stream, 'g', '-', '+', 10)).toHaveLength(1);
  });
});

describe('snapshot', () => {
  it('is one read-only round trip answering the last seq and, per field, the count and in-flight ids', async () => {
    const { q } = setup();
    await q.enqueue({ p: 1 }, { tally: 'a' });
    await q.enqueue({ p: 2 }, { tally: 'b' });
    const before = Date.now() * 1000;
    const { result, trips } = await countTrips(url, () => q.snapshot(['a', 'b', 'none']));
    expect(trips.map((t) => t.commands)).toEqual([['evalsha_ro']]);
    expect(result.pending).toEqual([{ count: 1, inFlight: [] }, { count: 1, inFlight: [] }, { count: 0, inFlight: [] }]);
    // No batch claimed yet: the seq is Redis time in µs, below every batch still to come.
    expect(result.seq).toBeGreaterThan(before - 60_000_000);
    expect(result.seq).toBeLessThan(before + 60_000_000);
    const store = memoryStore();
    await q.drain({ group: 'g', consumer: 'c', handler: (b) => store.apply(b) });
    expect([...store.applied.values()].every((a) => a.seq > result.seq)).toBe(true);
  });
});

describe('failure policy: fail closed with WriteBehindError', () => {
  it('Redis stopped (the gateway answers 503): enqueue, drain and snapshot reject; the handler is never called', async () => {
    const down = new Redis({ url: inject('downGatewayUrl'), token });
    const q = createWriteBehind({ redis: down, keys: keySchema(), name: 'down' });
    await expect(q.enqueue({ p: 1 })).rejects.toMatchObject({ name: 'WriteBehindError', code: 'unavailable', op: 'enqueue' });
    await expect(q.drain({ group: 'g', consumer: 'c', handler: handlerFails })).rejects.toMatchObject({ code: 'unavailable', op: 'drain' });
    await expect(q.snapshot(['a'])).rejects.toMatchObject({ code: 'unavailable', op: 'snapshot' });
  });

  it('recovers a lost script cache with EVAL', async () => {
    // A real client whose EVALSHA answers NOSCRIPT, as after a SCRIPT FLUSH (flushing for real
    // would break the warm-script round-trip counts of files running in parallel).
    const noscript = () => Promise.reject(new Error('NOSCRIPT No matching script. Please use EVAL.'));
    const client: WriteBehindRedis = {
      evalsha: noscript as WriteBehindRedis['evalsha'],
      evalshaRo: noscript as WriteBehindRedis['evalshaRo'],
      eval: redis.eval.bind(redis) as WriteBehindRedis['eval'],
      evalRo: redis.evalRo.bind(redis) as WriteBehindRedis['evalRo'],
    };
    const q = createWriteBehind({ redis: client, keys: keySchema({ app: `t${crypto.randomUUID().slice(0, 8)}`, env: 'test' }), name: 'q' });
    await q.enqueue({ p: 1 }, { tally: 'a' });
    expect((await q.snapshot(['a'])).pending[0]?.count).toBe(1);
    expect(await q.drain({ group: 'g', consumer: 'c', handler: () => undefined })).toMatchObject({ acked: 1 });
    expect((await q.snapshot(['a'])).pending[0]?.count).toBe(0);
  });
});
