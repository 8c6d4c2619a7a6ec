/**
 * Several locks at once (one per product of an order) without deadlock, in as few round trips as the
 * contention allows. Built on lock.ts; sends nothing itself.
 *
 * - First every lock is tried once, all in the same tick: with a batching client that is ONE round
 *   trip however many resources there are. Uncontended, that is all.
 * - If some are busy, the locks from the first busy one onwards (in sorted order) are released and
 *   the rest is taken one by one in sorted order, each waiting up to the shared deadline. Holding a
 *   sorted prefix while waiting for the next one is the classic ordered acquisition, so two callers
 *   can never wait on each other in a cycle.
 * - Everything taken is released (best effort; the leases bound a failed release) when the deadline
 *   passes, the signal aborts or Redis fails.
 *
 * Failure policy: fail closed, as lock.ts: a Redis failure rejects with a `LockError` (`unavailable`).
 *
 * @example
 * const held = await acquireAll(locks, ['product:3', 'product:7'], { leaseMs: 10_000, waitMs: 5_000 });
 * if (!held) return c.json({ error: 'busy' }, 409);
 * try { await write(held.map((l) => l.fence)); } finally { await releaseAll(held); }
 */
import type { AcquireOptions, Lock, Locks } from './lock.ts';

/** Releases every lock, in one round trip with a batching client; never rejects. */
export async function releaseAll(held: readonly Lock[]): Promise<void> {
  await Promise.allSettled(held.map((l) => l.release()));
}

/**
 * Locks every resource (duplicates count once), or none: `null` when one stayed busy until `waitMs`
 * ran out. The locks come back in sorted resource order.
 */
export async function acquireAll(locks: Pick<Locks, 'acquire'>, resources: readonly string[], options: AcquireOptions = {}): Promise<Lock[] | null> {
  const { waitMs = 0, signal, ...rest } = options;
  const sorted = [...new Set(resources)].sort();
  const deadline = Date.now() + waitMs;

  // One attempt each, same tick. allSettled: a failure must not leave a won lock unreleased.
  const first = await Promise.allSettled(sorted.map((r) => locks.acquire(r, { ...rest, waitMs: 0, ...(signal ? { signal } : {}) })));
  const won = first.flatMap((s) => (s.status === 'fulfilled' && s.value ? [s.value] : []));
  const failed = first.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    await releaseAll(won);
    throw failed.reason;
  }
  const busy = first.findIndex((s) => s.status === 'fulfilled' && s.value === null);
  if (busy === -1) return won;

  const held = won.filter((l) => sorted.indexOf(l.resource) < busy);
  const outOfOrder = won.filter((l) => sorted.indexOf(l.resource) > busy);
  // Sent with the next attempt (same tick, same round trip); awaited before answering.
  const dropping = releaseAll(outOfOrder);
  try {
    for (let i = busy; i < sorted.length; i++) {
      const lock = await locks.acquire(sorted[i]!, { ...rest, waitMs: Math.max(0, deadline - Date.now()), ...(signal ? { signal } : {}) });
      if (!lock) {
        await releaseAll(held);
        return null;
      }
      held.push(lock);
    }
  } catch (err) {
    await releaseAll(held);
    throw err;
  } finally {
    await dropping;
  }
  return held;
}
