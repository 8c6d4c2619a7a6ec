/**
 * src/lib/idempotency.ts against real Redis through the gateway: one-command claims, duplicates in
 * progress and after completion, fingerprints, release, expiry of a dead claim, and failing closed.
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { edgeRedisProblem } from 'edge-redis/hono';
import { canonicalJson, createIdempotency, fingerprint, IdempotencyError, SCRIPTS } from 'edge-redis/idempotency';
import { keySchema } from 'edge-redis/keys';
import { countTrips } from '../support/round-trips.ts';

const url = env.UPSTASH_REDIS_REST_URL;
const token = env.UPSTASH_REDIS_REST_TOKEN;
const redis = new Redis({ url, token });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup(options: { pendingMs?: number; ttlMs?: number } = {}) {
  const keys = keySchema({ app: 't' + crypto.randomUUID().slice(0, 8), env: 'test' });
  const idem = createIdempotency({ redis, keys, namespace: 'orders', ...options });
  return { keys, idem, recordKey: (id: string) => keys.key('idem', 'orders', id) };
}

const sha1 = async (s: string) =>
  Array.from(new Uint8Array(await crypto.subtle.digest('SHA-1', new TextEncoder().encode(s))), (b) => b.toString(16).padStart(2, '0')).join('');

beforeAll(async () => {
  await Promise.all(Object.values(SCRIPTS).map((s) => redis.scriptLoad(s.src)));
});

describe('scripts', () => {
  it('pins each SHA: sha1(src) and SCRIPT LOAD agree with the exported constant', async () => {
    for (const [name, { src, sha }] of Object.entries(SCRIPTS)) {
      expect(await sha1(src), name).toBe(sha);
      expect(await redis.scriptLoad(src), name).toBe(sha);
    }
  });
});

describe('fingerprint', () => {
  it('is the SHA-256 of canonical JSON: object key order does not matter, values do', async () => {
    expect(canonicalJson({ b: 1, a: [2, { d: 'x', c: null }] })).toBe('{"a":[2,{"c":null,"d":"x"}],"b":1}');
    const a = await fingerprint({ x: 1, y: [1, 2] });
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(await fingerprint({ y: [1, 2], x: 1 })).toBe(a);
    expect(await fingerprint({ x: 1, y: [2, 1] })).not.toBe(a);
    expect(await fingerprint(['a', 'b:c'])).not.toBe(await fingerprint(['a:b', 'c']));
  });
});

describe('begin / complete / release', () => {
  it('construction does no I/O and checks its options', async () => {
    const { trips } = await countTrips(url, async () => setup());
    expect(trips).toEqual([]);
    expect(() => createIdempotency({ redis, keys: keySchema(), pendingMs: 0 })).toThrow(RangeError);
    expect(() => createIdempotency({ redis, keys: keySchema(), ttlMs: 1.5 })).toThrow(RangeError);
  });

  it('the first begin claims the key with ONE command (SET NX GET PX); the marker expires after pendingMs', async () => {
    const { idem, recordKey } = setup({ pendingMs: 20_000 });
    const id = await fingerprint('k1');
    const { result: claim, count, commands } = await countTrips(url, () => idem.begin(id, 'fp-a'));
    expect(claim).toMatchObject({ state: 'claimed', token: expect.stringMatching(/^[0-9a-f]{32}$/) });
    expect(count).toBe(1);
    expect(commands).toEqual(['set']);
    const pttl = await redis.pttl(recordKey(id));
    expect(pttl).toBeGreaterThan(15_000);
    expect(pttl).toBeLessThanOrEqual(20_000);
  });

  it('a duplicate while in progress is told so, and whether it is the same request', async () => {
    const { idem } = setup();
    const id = await fingerprint('k2');
    expect((await idem.begin(id, 'fp-a')).state).toBe('claimed');
    expect(await idem.begin(id, 'fp-a')).toEqual({ state: 'in_progress', sameRequest: true });
    expect(await idem.begin(id, 'fp-b')).toEqual({ state: 'in_progress', sameRequest: false });
    expect(await idem.peek(id)).toEqual({ state: 'in_progress', fingerprint: 'fp-a' });
  });

  it('after complete, every begin gets the stored response (TTL ttlMs), same request or not', async () => {
    const { idem, recordKey } = setup({ ttlMs: 86_400_000 });
    const id = await fingerprint('k3');
    const claim = await idem.begin(id, 'fp-a');
    if (claim.state !== 'claimed') throw new Error(JSON.stringify(claim));
    const response = { status: 201, body: { orderId: 'o-1', items: [{ productId: 7, quantity: 2 }], total: 12.5 } };
    const done = await countTrips(url, () => idem.complete(id, 'fp-a', response));
    expect(done.commands).toEqual(['set']);
    expect(await redis.pttl(recordKey(id))).toBeGreaterThan(86_000_000);

    expect(await idem.begin(id, 'fp-a')).toEqual({ state: 'completed', sameRequest: true, fingerprint: 'fp-a', response });
    expect(await idem.begin(id, 'fp-b')).toEqual({ state: 'completed', sameRequest: false, fingerprint: 'fp-a', response });
    expect(await idem.peek(id)).toEqual({ state: 'completed', fingerprint: 'fp-a', response });
    // A late release by the original holder must not drop the completed record.
    expect(await idem.release(id, claim.token)).toBe(false);
    expect(await idem.peek(id)).toMatchObject({ state: 'completed' });
  });

  it('release drops only our own marker (one EVALSHA), so the key can be claimed again at once', async () => {
    const { idem, recordKey } = setup();
    const id = await fingerprint('k4');
    const claim = await idem.begin(id, 'fp-a');
    if (claim.state !== 'claimed') throw new Error(JSON.stringify(claim));
    expect(await idem.release(id, 'f'.repeat(32))).toBe(false);
    expect(await redis.exists(recordKey(id))).toBe(1);
    const rel = await countTrips(url, () => idem.release(id, claim.token));
    expect(rel.result).toBe(true);
    expect(rel.commands).toEqual(['evalsha']);
    expect(await redis.exists(recordKey(id))).toBe(0);
    expect((await idem.begin(id, 'fp-b')).state).toBe('claimed');
    await expect(idem.release(id, 'not a token')).rejects.toBeInstanceOf(TypeError);
  });

  it('ten concurrent begins with one key: exactly one claims it', async () => {
    const { idem } = setup();
    const id = await fingerprint('k5');
    const claims = await Promise.all(Array.from({ length: 10 }, () => idem.begin(id, 'fp-a')));
    expect(claims.filter((c) => c.state === 'claimed')).toHaveLength(1);
    expect(claims.filter((c) => c.state === 'in_progress' && c.sameRequest)).toHaveLength(9);
  });

  it('a claim whose holder died expires after pendingMs and the key is free again', async () => {
    const { idem } = setup({ pendingMs: 50 });
    const id = await fingerprint('k6');
    expect((await idem.begin(id, 'fp-a')).state).toBe('claimed');
    await sleep(120);
    expect(await idem.peek(id)).toBeNull();
    expect((await idem.begin(id, 'fp-a')).state).toBe('claimed');
  });

  it('an unreadable value under the key is never overwritten nor replayed', async () => {
    const { idem, recordKey } = setup();
    const id = await fingerprint('k7');
    await redis.set(recordKey(id), 'garbage');
    expect(await idem.begin(id, 'fp-a')).toEqual({ state: 'in_progress', sameRequest: false });
    expect(await idem.peek(id)).toBeNull();
    expect(await redis.get(recordKey(id))).toBe('garbage');
  });

  it('refuses a key id that is not a safe key segment', async () => {
    const { idem } = setup();
    await expect(idem.begin('a:b', 'fp')).rejects.toBeInstanceOf(TypeError);
    await expect(idem.peek('x'.repeat(129))).rejects.toBeInstanceOf(TypeError);
  });
});

describe('failure policy: fail closed', () => {
  it('Redis stopped (the gateway answers 503): every call rejects with IdempotencyError (503 through edge-redis/hono)', async () => {
    const down = new Redis({ url: inject('downGatewayUrl'), token });
    const idem = createIdempotency({ redis: down, keys: keySchema({ app: 'down', env: 'test' }) });
    const id = await fingerprint('k');
    const calls = await Promise.allSettled([idem.begin(id, 'fp'), idem.peek(id), idem.complete(id, 'fp', { status: 201, body: {} }), idem.release(id, 'a'.repeat(32))]);
    for (const call of calls) {
      expect(call.status).toBe('rejected');
      const err: unknown = call.status === 'rejected' ? call.reason : null;
      expect(err).toBeInstanceOf(IdempotencyError);
      expect(err).toMatchObject({ pattern: 'idempotency', code: 'unavailable', cause: expect.anything() });
      expect(edgeRedisProblem(err as IdempotencyError)).toMatchObject({ code: 'unavailable', headers: { 'retry-after': '1' } });
    }
  });
});
