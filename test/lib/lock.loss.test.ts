/**
 * src/lib/lock.ts when Redis forgets, on a private Redis of this file (test/support/faults.ts):
 * flushed between two steps, each key deleted alone, a random share of keys deleted while
 * contenders run, and the process restarted empty in the middle of `withLock`. The protected store
 * is a fenced register in memory (accepts a write only above the highest fence it has seen), so
 * the README's invariants are checked against it: it never takes a write from a fence it has
 * passed, and with the store's fence as `fenceFloor` the first write after any loss goes through.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keySchema } from 'edge-redis/keys';
import { acquireAll, createLocks, releaseAll, SCRIPTS, type Lock } from 'edge-redis/lock';
import { createRedis } from 'edge-redis/redis';
import { countTrips } from '../support/round-trips.ts';
import { privateRedis, type PrivateRedis } from '../support/faults.ts';

let lab: PrivateRedis;
beforeAll(async () => {
  lab = await privateRedis();
});
afterAll(() => lab?.stop());

function setup() {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const redis = createRedis({ ...lab.bindings }, { batch: 'task' });
  return { keys, locks: createLocks({ redis, keys }), lock: (r: string) => keys.slotted('lock', r), fence: (r: string) => keys.slotted('lock', r, 'fence') };
}

/** The protected store: one register per resource that refuses a fence not above its last. */
function fencedStore() {
  const last = new Map<string, number>();
  return {
    last,
    write(resource: string, fence: number): boolean {
      if (fence <= (last.get(resource) ?? 0)) return false;
      last.set(resource, fence);
      return true;
    },
    floor: (resource: string) => last.get(resource) ?? 0,
  };
}

/**
 * The app's way (src/functions/checkout.ts): write; if the store has passed our fence, acquire again
 * above the store's fence and retry, at most `tries` times in all. One retry repairs a forgotten
 * counter; more are needed only when a forgotten lock key let another holder write in between.
 */
async function fencedWrite(locks: ReturnType<typeof setup>['locks'], store: ReturnType<typeof fencedStore>, resource: string, tries = 2): Promise<{ ok: boolean; tries: number }> {
  let floor = 0;
  for (let n = 1; ; n++) {
    const lock = await locks.acquire(resource, { waitMs: 2_000, ...(floor > 0 ? { fenceFloor: floor } : {}) });
    if (!lock) throw new Error('not acquired');
    try {
      if (store.write(resource, lock.fence)) return { ok: true, tries: n };
      if (n >= tries) return { ok: false, tries: n };
      floor = store.floor(resource);
    } finally {
      await lock.release().catch(() => false);
    }
  }
}

describe('fenceFloor', () => {
  it('mints a fence above the floor and lifts the counter past it, in the one acquire round trip', async () => {
    const { locks, fence } = setup();
    await lab.client.scriptLoad(SCRIPTS.acquire.src);
    const { result: lock, count } = await countTrips(lab.bindings.UPSTASH_REDIS_REST_URL, () => locks.acquire('r', { fenceFloor: 41 }));
    expect(count).toBe(1);
    expect(lock?.fence).toBe(42);
    expect(await lab.client.get(fence('r'))).toBe(42);
    await lock?.release();
    // Below the counter, the floor changes nothing; without one, the counter goes on from there.
    expect((await locks.acquire('r', { fenceFloor: 3 }))?.fence).toBe(43);
  });

  it('refuses a floor that is not a whole number ≥ 0', async () => {
    const { locks } = setup();
    await expect(locks.acquire('r', { fenceFloor: -1 })).rejects.toThrow(RangeError);
    await expect(locks.acquire('r', { fenceFloor: 1.5 })).rejects.toThrow(RangeError);
  });
});

describe('Redis forgets the lock state', () => {
  it('flushed between two holders: the counter restarts below the store, the store refuses it, the floor repairs it at once', async () => {
    const { locks } = setup();
    const store = fencedStore();
    for (let i = 0; i < 5; i++) expect(await fencedWrite(locks, store, 'p')).toEqual({ ok: true, tries: 1 });
    expect(store.floor('p')).toBe(5);
    await lab.flushall();
    const lost = await locks.acquire('p');
    expect(lost?.fence).toBe(1); // what a counter that forgot mints
    expect(store.write('p', lost!.fence)).toBe(false); // and the store rightly refuses it
    await lost?.release();
    expect(await fencedWrite(locks, store, 'p')).toEqual({ ok: true, tries: 2 });
    // Repaired: the next holders are above the store again at the first try.
    expect(await fencedWrite(locks, store, 'p')).toEqual({ ok: true, tries: 1 });
  });

  it('each key deleted alone: the fence key (next fence repaired), the lock key (a second holder, fenced out of the store)', async () => {
    const { locks, lock, fence } = setup();
    const store = fencedStore();
    await fencedWrite(locks, store, 'a');
    await fencedWrite(locks, store, 'a');
    await lab.del(fence('a'));
    expect(await fencedWrite(locks, store, 'a')).toEqual({ ok: true, tries: 2 });

    const first = await locks.acquire('b');
    await lab.del(lock('b')); // the holder's lease is forgotten while it works
    const second = await locks.acquire('b');
    expect(second).not.toBeNull();
    expect(second!.fence).toBeGreaterThan(first!.fence);
    expect(store.write('b', second!.fence)).toBe(true);
    expect(store.write('b', first!.fence)).toBe(false); // the paused first holder cannot write after it
    expect(await first!.release()).toBe(false); // nor release the second holder's lock
    expect((await locks.inspect('b')).holder).toBe(second!.holder);
    await second!.release();
  });

  it('restarted empty in the middle of withLock: fn is told the lock is lost; the next holder writes at the first try after repair', async () => {
    const { locks } = setup();
    const store = fencedStore();
    await fencedWrite(locks, store, 'w');
    const seen = await locks.withLock('w', async (signal, held) => {
      expect(store.write('w', held.fence)).toBe(true);
      await lab.restart();
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
      return signal.reason;
    }, { leaseMs: 300 });
    expect(seen).toMatchObject({ name: 'LockError', code: 'lost' });
    expect(await fencedWrite(locks, store, 'w')).toEqual({ ok: true, tries: 2 });
  });

  it('a random half of the keys deleted again and again while 3 writers contend: every write lands within 5 tries, the store only ever goes up', { timeout: 60_000 }, async () => {
    const { locks } = setup();
    const store = fencedStore();
    const accepted: number[] = [];
    const stop = await lab.chaos(0.5, 15);
    try {
      await Promise.all(Array.from({ length: 3 }, async () => {
        for (let i = 0; i < 15; i++) {
          const r = await fencedWrite(locks, store, 'hot', 5);
          expect(r.ok).toBe(true);
          accepted.push(store.floor('hot'));
        }
      }));
    } finally {
      expect((await stop()).rounds).toBeGreaterThan(0);
    }
    expect(accepted).toHaveLength(45);
    expect(new Set(accepted).size).toBe(45); // 45 distinct fences taken, each above the one before
  });

  it('acquireAll passes the floor to every lock: several resources repaired in one retry', async () => {
    const { locks } = setup();
    const held = await acquireAll(locks, ['x', 'y'], { fenceFloor: 100 });
    expect(held?.map((l: Lock) => l.fence)).toEqual([101, 101]);
    await releaseAll(held!);
  });
});
