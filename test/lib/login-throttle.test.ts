/**
 * src/lib/login-throttle.ts against the real Redis through the gateway: failed attempts count per
 * source and per account, successes do not and clear their source, reservations hold under
 * concurrency, trusted devices are never held back by the account throttle, round trips, and the
 * failure policy (closed). Then, on a private Redis (test/support/faults.ts), what Redis forgetting
 * does: counts reset, trust lost, and never an owner's login counted as a failure.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { keySchema } from 'edge-redis/keys';
import { edgeRedisProblem } from 'edge-redis/hono';
import { createLoginThrottle, LoginThrottleError, SCRIPTS, type Gate, type LoginThrottleRedis } from 'edge-redis/login-throttle';
import { privateRedis, type PrivateRedis } from '../support/faults.ts';
import { countTrips } from '../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });
const sha1 = async (s: string) =>
  Array.from(new Uint8Array(await crypto.subtle.digest('SHA-1', new TextEncoder().encode(s))), (b) => b.toString(16).padStart(2, '0')).join('');

function setup(client: LoginThrottleRedis = redis, perSource = 3, perAccount = 5) {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  return createLoginThrottle({ redis: client, keys, perSource: { limit: perSource, windowMs: 60_000 }, perAccount: { limit: perAccount, windowMs: 60_000 } });
}
const allowed = (g: Gate) => {
  if (!g.allowed) throw new Error(`refused by ${g.by}`);
  return g.attempt;
};

beforeAll(async () => {
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

describe('scripts and construction', () => {
  it('pins each SHA: sha1(src) and SCRIPT LOAD agree with the exported constant', async () => {
    for (const [name, { src, sha }] of Object.entries(SCRIPTS)) {
      expect(await sha1(src), name).toBe(sha);
      expect(await redis.scriptLoad(src), name).toBe(sha);
    }
  });

  it('does no I/O when built, and refuses bad limits', async () => {
    const { trips } = await countTrips(url, async () => setup());
    expect(trips).toEqual([]);
    const keys = keySchema();
    expect(() => createLoginThrottle({ redis, keys, perSource: { limit: 0, windowMs: 1 }, perAccount: { limit: 1, windowMs: 1 } })).toThrow(RangeError);
    await expect(setup().check({ account: '', source: 'x' })).rejects.toThrow(TypeError);
  });
});

describe('per source', () => {
  it('failed attempts count; the one past the limit is refused with the time until room frees', async () => {
    const t = setup();
    for (let i = 0; i < 3; i++) expect((await t.check({ account: 'alice', source: 'ip1' })).allowed).toBe(true);
    const refused = await t.check({ account: 'alice', source: 'ip1' });
    expect(refused).toMatchObject({ allowed: false, by: 'source' });
    if (!refused.allowed) expect(refused.retryAfterMs).toBeGreaterThan(59_000);
    // Another address, another account: counts of their own.
    expect((await t.check({ account: 'alice', source: 'ip2' })).allowed).toBe(true);
    expect((await t.check({ account: 'bob', source: 'ip1' })).allowed).toBe(true);
  });

  it('a success does not count and clears its source: four devices logging in spend nothing', async () => {
    const t = setup();
    for (let i = 0; i < 4; i++) await allowed(await t.check({ account: 'carol', source: 'ip' })).succeeded();
    await t.check({ account: 'carol', source: 'ip' });
    await t.check({ account: 'carol', source: 'ip' }); // two failures
    await allowed(await t.check({ account: 'carol', source: 'ip' })).succeeded();
    for (let i = 0; i < 3; i++) expect((await t.check({ account: 'carol', source: 'ip' })).allowed, `try ${i}`).toBe(true);
    expect((await t.check({ account: 'carol', source: 'ip' })).allowed).toBe(false);
  });

  it('20 concurrent attempts with a count of 0: exactly the limit get through (each is reserved when checked)', async () => {
    const t = setup(redis, 3, 100);
    const gates = await Promise.all(Array.from({ length: 20 }, () => t.check({ account: 'dave', source: 'ip' })));
    expect(gates.filter((g) => g.allowed)).toHaveLength(3);
  });
});

describe('per account: a throttle, not a lock-out', () => {
  it('distributed guessing (one failure from each of many addresses) is stopped at the account limit', async () => {
    const t = setup();
    for (let i = 0; i < 5; i++) expect((await t.check({ account: 'erin', source: `ip${i}` })).allowed).toBe(true);
    expect(await t.check({ account: 'erin', source: 'ip99' })).toMatchObject({ allowed: false, by: 'account' });
  });

  it('the owner\'s trusted device is not held back by it (it has its own count), a new device is', async () => {
    const t = setup();
    const device = await allowed(await t.check({ account: 'frank', source: 'home' })).succeeded();
    for (let i = 0; i < 5; i++) await t.check({ account: 'frank', source: `bot${i}` }); // the attacker fills the account log
    expect(await t.check({ account: 'frank', source: 'cafe' })).toMatchObject({ allowed: false, by: 'account' });
    const owner = allowed(await t.check({ account: 'frank', source: 'cafe', device }));
    expect(owner.trusted).toBe(true);
    expect(owner.remaining.account).toBe(-1);
    expect(await owner.succeeded()).toBe(device);
    // The trusted device's own failures are limited like a source's.
    for (let i = 0; i < 3; i++) expect((await t.check({ account: 'frank', source: 'cafe', device })).allowed).toBe(true);
    expect(await t.check({ account: 'frank', source: 'cafe', device })).toMatchObject({ allowed: false, by: 'source' });
  });

  it('a device token trusted for one account means nothing for another, and a malformed one is ignored', async () => {
    const t = setup();
    const device = await allowed(await t.check({ account: 'gina', source: 'x' })).succeeded();
    expect(allowed(await t.check({ account: 'hank', source: 'x', device })).trusted).toBe(false);
    const fresh = allowed(await t.check({ account: 'gina', source: 'x', device: 'not a token' }));
    expect(fresh.trusted).toBe(false);
    expect(await fresh.succeeded()).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });
});

describe('round trips and failure policy', () => {
  it('check is 1 round trip, succeeded 1, a failure 0', async () => {
    const t = setup();
    const checked = await countTrips(url, () => t.check({ account: 'ivy', source: 'ip' }));
    expect(checked.trips.map((x) => x.commands)).toEqual([['evalsha']]);
    const ok = await countTrips(url, () => allowed(checked.result).succeeded());
    expect(ok.trips.map((x) => x.commands)).toEqual([['evalsha']]);
  });

  it('Redis down: rejects with LoginThrottleError (503 through edge-redis/hono), never lets the attempt through', async () => {
    const t = setup(new Redis({ url: inject('downGatewayUrl'), token }));
    const err = await t.check({ account: 'jo', source: 'ip' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoginThrottleError);
    expect(err).toMatchObject({ code: 'unavailable', cause: expect.anything() });
    expect(edgeRedisProblem(err as LoginThrottleError)).toMatchObject({ code: 'unavailable', headers: { 'retry-after': '1' } });
  });
});

describe('when Redis forgets (private Redis)', () => {
  let lab: PrivateRedis;
  let client: Redis;
  beforeAll(async () => {
    lab = await privateRedis();
    client = new Redis({ url: lab.bindings.UPSTASH_REDIS_REST_URL, token: lab.bindings.UPSTASH_REDIS_REST_TOKEN });
  });
  afterAll(() => lab?.stop());

  it('flushed: the counts reset (what may be lost), the owner can always log in', async () => {
    const t = setup(client);
    for (let i = 0; i < 3; i++) await t.check({ account: 'kim', source: 'ip' });
    expect((await t.check({ account: 'kim', source: 'ip' })).allowed).toBe(false);
    await lab.flushall();
    expect((await t.check({ account: 'kim', source: 'ip' })).allowed).toBe(true);
  });

  it('each key deleted alone: a forgotten trust makes the device untrusted until its next success, never locked out by its own logins', async () => {
    const t = setup(client);
    const device = await allowed(await t.check({ account: 'lee', source: 'home' })).succeeded();
    for (const kind of ['src', 'dev', 'trust', '']) {
      const keys = (await lab.keys('*')).filter((k) => k.includes('{lee}') && (kind === '' ? k.endsWith('{lee}') : k.includes(`}:${kind}`)));
      if (keys.length) await lab.del(...keys);
      const a = allowed(await t.check({ account: 'lee', source: 'home', device }));
      expect(await a.succeeded(), kind).toBe(device);
      expect(allowed(await t.check({ account: 'lee', source: 'home', device })).trusted, kind).toBe(true);
    }
  });

  it('restarted empty between the check and the success: the login succeeds and the device is trusted', async () => {
    const t = setup(client);
    const a = allowed(await t.check({ account: 'max', source: 'ip' }));
    await lab.restart();
    const device = await a.succeeded();
    expect(allowed(await t.check({ account: 'max', source: 'ip', device })).trusted).toBe(true);
  });

  it('a random share of the keys deleted again and again while the owner logs in 40 times: never refused, successes never counted', { timeout: 60_000 }, async () => {
    const t = setup(client, 3, 5);
    let device: string | undefined;
    const stop = await lab.chaos(0.5, 10);
    try {
      for (let i = 0; i < 40; i++) {
        const g = await t.check({ account: 'ned', source: 'ip', device });
        expect(g.allowed, `login ${i}`).toBe(true);
        if (g.allowed) device = await g.attempt.succeeded();
      }
    } finally {
      expect((await stop()).rounds).toBeGreaterThan(0);
    }
  });
});
