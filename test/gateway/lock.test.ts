/**
 * `@upstash/lock` through the gateway: SET NX PX to acquire, GET for status, plain EVAL to release
 * and extend.
 */
import { randomUUID } from 'node:crypto';
import { Lock, type LockCreateConfig } from '@upstash/lock';
import { describe, expect, test } from 'vitest';
import { client, prefix, shared } from './helpers.ts';

describe.each([
  { name: 'base64, auto-pipelining', base64: true, autoPipelining: true },
  { name: 'plain JSON, one request per command', base64: false, autoPipelining: false },
])('@upstash/lock ($name)', (mode) => {
  // @upstash/lock's CommonJS typings import @upstash/redis's CommonJS declarations, a separate (but
  // identical) class from the ESM one imported here; the cast bridges the two declarations only.
  const redis = client(shared(), mode) as unknown as LockCreateConfig['redis'];
  const observer = client(shared(), { autoPipelining: false });

  test('acquire, a second acquire fails, extend, release, then acquire again', async () => {
    const id = `${prefix()}lock`;
    const uuid = randomUUID();
    const holder = new Lock({ id, redis, lease: 10_000 });
    const rival = new Lock({ id, redis, lease: 10_000, retry: { attempts: 2, delay: 20 } });

    expect(await holder.acquire({ uuid })).toBe(true);
    expect(await holder.getStatus()).toBe('ACQUIRED');
    expect(await observer.get(id)).toBe(uuid);
    const leased = await observer.pttl(id);
    expect(leased).toBeGreaterThan(0);
    expect(leased).toBeLessThanOrEqual(10_000);

    expect(await rival.acquire()).toBe(false);
    expect(await rival.getStatus()).toBe('FREE');
    expect(await rival.release()).toBe(false);
    expect(await observer.get(id)).toBe(uuid);

    // The library extends by whole seconds (amt / 1000 goes to EXPIRE).
    expect(await holder.extend(5_000)).toBe(true);
    expect(await observer.pttl(id)).toBeGreaterThan(10_000);

    expect(await holder.release()).toBe(true);
    expect(await observer.exists(id)).toBe(0);
    expect(await holder.getStatus()).toBe('FREE');
    expect(await holder.extend(5_000)).toBe(false);

    expect(await rival.acquire()).toBe(true);
    expect(await rival.getStatus()).toBe('ACQUIRED');
    expect(await rival.release()).toBe(true);
  });

  test('of many concurrent acquirers exactly one wins', async () => {
    const id = `${prefix()}lock`;
    const locks = Array.from({ length: 20 }, () => new Lock({ id, redis, lease: 10_000, retry: { attempts: 1, delay: 10 } }));
    const won = await Promise.all(locks.map((l) => l.acquire()));
    expect(won.filter(Boolean)).toHaveLength(1);
    const winner = locks[won.indexOf(true)];
    expect(await winner?.release()).toBe(true);
  });
});
