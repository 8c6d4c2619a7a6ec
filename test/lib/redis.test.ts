/**
 * createRedis: settings checked before any I/O, one client per env, and the retry and timeout
 * policy, counted at the client's fetch (each attempt is one HTTP request).
 */
import { env } from 'cloudflare:workers';
import { describe, expect, inject, test } from 'vitest';
import { classifyRedisError, createRedis, DEFAULT_REDIS_RETRIES, RedisConfigError, type RedisEnv, type RedisTrip } from 'edge-redis/redis';
import { countTrips } from '../support/round-trips.ts';

/** A fresh env object (so a fresh client) pointing at `url`. */
function envFor(url: string, extra: RedisEnv = {}): RedisEnv {
  return { UPSTASH_REDIS_REST_URL: url, UPSTASH_REDIS_REST_TOKEN: inject('gatewayToken'), ...extra };
}

/** Runs one PING and returns what it threw (or undefined), with the HTTP requests it made. */
async function pingTrips(url: string, redisEnv: RedisEnv, options: Parameters<typeof createRedis>[1] = {}) {
  const redis = createRedis(redisEnv, options);
  return countTrips(url, () => redis.ping().then(() => undefined, (err: unknown) => err));
}

describe('createRedis', () => {
  test('reuses one client per env object and per setting', () => {
    const a = envFor(inject('gatewayUrl'));
    const b = envFor(inject('gatewayUrl'));
    expect(createRedis(a)).toBe(createRedis(a));
    expect(createRedis(b)).not.toBe(createRedis(a));
    expect(createRedis(a, { timeoutMs: 500 })).not.toBe(createRedis(a));
    expect(createRedis(a, { timeoutMs: 500 })).toBe(createRedis(a, { timeoutMs: 500 }));
  });

  test('does no I/O until the first command, which is one request', async () => {
    const redisEnv = envFor(inject('gatewayUrl'));
    const built = await countTrips(inject('gatewayUrl'), async () => createRedis(redisEnv));
    expect(built.count).toBe(0);
    const pinged = await countTrips(inject('gatewayUrl'), () => built.result.ping());
    expect(pinged.result).toBe('PONG');
    expect(pinged.trips).toMatchObject([{ path: '/pipeline', commands: ['ping'] }]);
  });

  test.each([
    ['a missing URL', { UPSTASH_REDIS_REST_URL: undefined }, /UPSTASH_REDIS_REST_URL is not set/],
    ['a missing token', { UPSTASH_REDIS_REST_TOKEN: '' }, /UPSTASH_REDIS_REST_TOKEN is not set/],
    ['a URL that is not http(s)', { UPSTASH_REDIS_REST_URL: 'redis://secret-host:6379' }, /must be an http\(s\) URL/],
    ['a URL that does not parse', { UPSTASH_REDIS_REST_URL: 'secret-host:::' }, /UPSTASH_REDIS_REST_URL/],
    ['a timeout that is not a number', { REDIS_TIMEOUT_MS: 'soon' }, /REDIS_TIMEOUT_MS/],
    ['a timeout of zero', { REDIS_TIMEOUT_MS: '0' }, /REDIS_TIMEOUT_MS/],
  ] as const)('throws RedisConfigError for %s, without quoting the value', (_name, override, message) => {
    const redisEnv = { ...envFor(inject('gatewayUrl')), ...override };
    let thrown: unknown;
    try {
      createRedis(redisEnv);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(RedisConfigError);
    expect(classifyRedisError(thrown)).toBe('config');
    const text = (thrown as Error).message;
    expect(text).toMatch(message);
    expect(text).not.toContain('secret-host');
    expect(text).not.toContain('soon');
  });

  test('accepts the env of wrangler.toml as it is', () => {
    expect(env.REDIS_TIMEOUT_MS).toBe('3000');
    expect(() => createRedis(env)).not.toThrow();
  });
});

describe('retry and timeout policy', () => {
  test(`a network failure is tried 1 + ${DEFAULT_REDIS_RETRIES} times, then reported as unreachable`, async () => {
    const url = inject('closedUrl');
    const { result, count } = await pingTrips(url, envFor(url));
    expect(classifyRedisError(result)).toBe('unreachable');
    expect(count).toBe(1 + DEFAULT_REDIS_RETRIES);
  });

  test('retries can be turned off per client', async () => {
    const url = inject('closedUrl');
    const { result, count } = await pingTrips(url, envFor(url), { retries: 0 });
    expect(classifyRedisError(result)).toBe('unreachable');
    expect(count).toBe(1);
  });

  test('an HTTP error answer is not retried', async () => {
    const url = inject('gatewayUrl');
    const { result, count } = await pingTrips(url, envFor(url, { UPSTASH_REDIS_REST_TOKEN: 'wrong-token' }));
    expect(classifyRedisError(result)).toBe('rejected');
    expect(count).toBe(1);
  });

  test('a gateway whose Redis is down is reported as rejected, not retried', async () => {
    const url = inject('downGatewayUrl');
    const { result, count } = await pingTrips(url, envFor(url));
    expect(classifyRedisError(result)).toBe('rejected');
    expect(count).toBe(1);
  });

  test('a request that outlives REDIS_TIMEOUT_MS is aborted and not retried', async () => {
    // The slow gateway answers after 400 ms; the budget is 100 ms.
    const url = inject('slowGatewayUrl');
    const { result, count } = await pingTrips(url, envFor(url, { REDIS_TIMEOUT_MS: '100' }));
    expect(classifyRedisError(result)).toBe('timeout');
    expect(count).toBe(1);
  });

  test('the timeout is per request: a client keeps working after one expired', async () => {
    const url = inject('slowGatewayUrl');
    const redisEnv = envFor(url, { REDIS_TIMEOUT_MS: '1000' });
    const redis = createRedis(redisEnv);
    // Three requests in a row, each held 400 ms by the gateway, fit a 1000 ms budget each; one
    // signal shared by the client's requests would expire during the third.
    for (let i = 0; i < 3; i++) expect(await redis.ping()).toBe('PONG');
  });
});

describe("createRedis({ batch: 'task' })", () => {
  const prefix = `batch:${crypto.randomUUID()}`;

  test('commands started during one task, across awaits and reads/writes, share one HTTP request', async () => {
    const redis = createRedis(envFor(inject('gatewayUrl')), { batch: 'task' });
    const { result, trips } = await countTrips(inject('gatewayUrl'), async () => {
      const a = (async () => {
        await Promise.resolve();
        await Promise.resolve();
        await Promise.resolve();
        return redis.set(`${prefix}:a`, { n: 1 });
      })();
      const b = redis.incr(`${prefix}:n`);
      const c = (async () => {
        for (let i = 0; i < 10; i++) await null;
        return redis.get(`${prefix}:missing`);
      })();
      return Promise.all([a, b, c]);
    });
    expect(result).toEqual(['OK', 1, null]);
    expect(trips).toMatchObject([{ path: '/pipeline', commands: ['incr', 'set', 'get'] }]);
    // Values come back deserialised as with a plain client.
    expect(await redis.get(`${prefix}:a`)).toEqual({ n: 1 });
  });

  test('one failing command rejects alone; the others of its batch succeed', async () => {
    const redis = createRedis(envFor(inject('gatewayUrl')), { batch: 'task' });
    await redis.set(`${prefix}:s`, 'text');
    const [bad, good] = await Promise.allSettled([redis.incr(`${prefix}:s`), redis.get(`${prefix}:s`)]);
    expect(bad.status).toBe('rejected');
    expect(good).toEqual({ status: 'fulfilled', value: 'text' });
  });

  test('a failed HTTP request rejects every command of the batch', async () => {
    const redis = createRedis(envFor(inject('downGatewayUrl')), { batch: 'task' });
    const settled = await Promise.allSettled([redis.get(`${prefix}:x`), redis.set(`${prefix}:y`, 1)]);
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected']);
    expect(settled.map((s) => (s.status === 'rejected' ? classifyRedisError(s.reason) : 'ok'))).toEqual(['rejected', 'rejected']);
  });
});

describe('createRedis({ observe })', () => {
  test('reports every HTTP request with its command count, for each batching mode and for pipelines', async () => {
    const url = inject('gatewayUrl');
    for (const batch of ['tick', 'task'] as const) {
      const seen: RedisTrip[] = [];
      const observe = (t: RedisTrip) => void seen.push(t);
      const redis = createRedis(envFor(url), { batch, observe });
      const key = `obs:${crypto.randomUUID()}`;
      const counted = await countTrips(url, async () => {
        await Promise.all([redis.set(key, '1'), redis.get(key), redis.incr(`${key}:n`)]);
        const p = redis.pipeline();
        p.get(key);
        p.get(`${key}:n`);
        await p.exec();
        await redis.del(key, `${key}:n`);
      });
      expect(seen.length, batch).toBe(counted.count);
      expect(seen.reduce((n, t) => n + t.commands, 0), batch).toBe(counted.commands.length);
      expect(seen.every((t) => t.ok && t.ms >= 0), batch).toBe(true);
    }
  });

  test('a failed request is reported as not ok, and the same observer gets the same client', async () => {
    const seen: RedisTrip[] = [];
    const observe = (t: RedisTrip) => void seen.push(t);
    const down = envFor(inject('downGatewayUrl'));
    expect(createRedis(down, { observe })).toBe(createRedis(down, { observe }));
    expect(createRedis(down, { observe })).not.toBe(createRedis(down));
    await expect(createRedis(down, { observe }).ping()).rejects.toThrow();
    expect(seen).toMatchObject([{ commands: 1, ok: false }]);
  });

  test('an observer that throws does not fail the command', async () => {
    const redis = createRedis(envFor(inject('gatewayUrl')), {
      observe: () => {
        throw new Error('observer broke');
      },
    });
    await expect(redis.ping()).resolves.toBe('PONG');
  });
});
