/**
 * A leaderboard in one sorted set: members scored by a running total (best sellers: product id →
 * units sold). Each call is one command, so one round trip, and joins the request's other commands
 * when the client batches them.
 *
 * - `increment` is ZINCRBY: atomic, so concurrent sales never lose a count. The set has no TTL: it
 *   is the running total itself, not a cache of one.
 * - `top(n)` is one `ZRANGE key 0 n-1 REV WITHSCORES`: O(log N + n), highest first; ties are ordered
 *   by member, descending (Redis's order).
 * - Repair: the totals are derived data (D1's order_items hold the truth); if a ZINCRBY was lost, a
 *   job can rebuild the set from `SELECT product_id, SUM(quantity) … GROUP BY product_id` with ZADD.
 *
 * Failure policy: fail closed for reads and writes alike: a failure rejects with a
 * `LeaderboardError` (`unavailable`) and the caller decides (checkout logs and carries on).
 *
 * @example
 * const bestSellers = createLeaderboard({ redis, keys, name: 'best-sellers' });
 * await bestSellers.increment('42', 2);
 * const top = await bestSellers.top(10); // [{ member: '42', score: 2 }, …]
 */
import { LeaderboardError } from './errors.ts';
import type { KeySchema } from './keys.ts';
import type { RedisCommands } from './redis.ts';
import { wholeNumber } from './util.ts';

export { LeaderboardError };

/** The commands this module sends. */
export type LeaderboardRedis = RedisCommands<'zincrby' | 'zrange'>;

export interface Entry {
  member: string;
  score: number;
}

export interface Leaderboard {
  /** Adds `by` (may be negative, e.g. a refund) to `member`'s score; answers the new score. One round trip. */
  increment(member: string, by: number): Promise<number>;
  /** The `n` highest scores, highest first. One round trip. */
  top(n: number): Promise<Entry[]>;
}

export interface LeaderboardOptions {
  redis: LeaderboardRedis;
  keys: KeySchema;
  /** The board's name: its sorted set is `keys.key('leaderboard', name)`. */
  name: string;
}

/**
 * Builds a leaderboard over one sorted set. Does no I/O.
 *
 * @example
 * const board = createLeaderboard({ redis, keys, name: 'best-sellers' });
 */
export function createLeaderboard({ redis, keys, name }: LeaderboardOptions): Leaderboard {
  const key = keys.key('leaderboard', name);
  return {
    async increment(member, by) {
      if (!Number.isFinite(by)) throw new RangeError('leaderboard: `by` must be a finite number');
      try {
        return Number(await redis.zincrby(key, by, member));
      } catch (cause) {
        throw new LeaderboardError('increment', { cause });
      }
    },
    async top(n) {
      wholeNumber('leaderboard: n', n);
      let flat: unknown[];
      try {
        flat = await redis.zrange<unknown[]>(key, 0, n - 1, { rev: true, withScores: true });
      } catch (cause) {
        throw new LeaderboardError('top', { cause });
      }
      // The reply is [member, score, member, score, …]; the client may have parsed "42" into 42.
      const out: Entry[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) out.push({ member: String(flat[i]), score: Number(flat[i + 1]) });
      return out;
    },
  };
}
