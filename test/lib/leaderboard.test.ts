/** src/lib/leaderboard.ts against real Redis through the gateway. */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { describe, expect, inject, it } from 'vitest';
import { keySchema } from 'edge-redis/keys';
import { edgeRedisProblem } from 'edge-redis/hono';
import { createLeaderboard, LeaderboardError } from 'edge-redis/leaderboard';
import { countTrips } from '../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });

function setup() {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  return { key: keys.key('leaderboard', 'best'), board: createLeaderboard({ redis, keys, name: 'best' }) };
}

describe('leaderboard', () => {
  it('construction does no I/O', async () => {
    const { trips } = await countTrips(url, async () => setup());
    expect(trips).toEqual([]);
  });

  it('increment is one ZINCRBY answering the new score; concurrent increments never lose a count', async () => {
    const { key, board } = setup();
    const one = await countTrips(url, () => board.increment('7', 2));
    expect(one).toMatchObject({ result: 2, count: 1, commands: ['zincrby'] });
    await Promise.all(Array.from({ length: 20 }, () => board.increment('7', 1)));
    expect(await redis.zscore(key, '7')).toBe(22);
    expect(await board.increment('7', -2)).toBe(20);
  });

  it('top(n) is one ZRANGE … REV WITHSCORES: highest first, members as strings, scores as numbers', async () => {
    const { board } = setup();
    await Promise.all([board.increment('42', 5), board.increment('7', 9), board.increment('1000', 1), board.increment('3', 5)]);
    const top = await countTrips(url, () => board.top(3));
    expect(top.count).toBe(1);
    expect(top.commands).toEqual(['zrange']);
    // Ties (42 and 3 at 5) come in descending member order, as Redis sorts them.
    expect(top.result).toEqual([{ member: '7', score: 9 }, { member: '42', score: 5 }, { member: '3', score: 5 }]);
    expect(await board.top(100)).toHaveLength(4);
    expect(await setup().board.top(10)).toEqual([]);
  });

  it('rejects a bad n or increment before sending anything', async () => {
    const { board } = setup();
    const { trips } = await countTrips(url, async () => {
      await expect(board.top(0)).rejects.toBeInstanceOf(RangeError);
      await expect(board.top(2.5)).rejects.toBeInstanceOf(RangeError);
      await expect(board.increment('1', Number.NaN)).rejects.toBeInstanceOf(RangeError);
    });
    expect(trips).toEqual([]);
  });

  it('fails closed: Redis stopped → LeaderboardError (503 through edge-redis/hono) with the cause', async () => {
    const down = new Redis({ url: inject('downGatewayUrl'), token });
    const board = createLeaderboard({ redis: down, keys: keySchema(), name: 'x' });
    const err: unknown = await board.top(5).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'LeaderboardError', code: 'unavailable', op: 'top', cause: expect.anything() });
    expect(edgeRedisProblem(err as LeaderboardError)).toMatchObject({ code: 'unavailable', headers: { 'retry-after': '1' } });
    await expect(board.increment('1', 1)).rejects.toBeInstanceOf(LeaderboardError);
  });
});
