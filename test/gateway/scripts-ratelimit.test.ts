/**
 * Scripts the way `@upstash/ratelimit` and `createScript` use them: EVALSHA first, EVAL on NOSCRIPT,
 * and the Upstash-only `#!lua flags=allow-key-locking` shebang that stock Redis rejects.
 *
 * Counting needs metrics nobody else touches, so this file runs its own gateway and reads
 * `gateway_commands_total` before and after.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Ratelimit } from '@upstash/ratelimit';
import type { Redis } from '@upstash/redis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { client, commandCounts, commandDelta, errorOf, post, prefix, privateGateway, scrape, show, type PrivateGateway } from './helpers.ts';

const sha1 = (text: string) => createHash('sha1').update(text).digest('hex');

// Its own Redis too: other suites run SCRIPT FLUSH on the shared one, which would turn a warm
// EVALSHA into NOSCRIPT + EVAL in the middle of a count.
let server: RedisProcess;
let gw: PrivateGateway;
/** Clients of the private gateway, one request per command (base64, and plain JSON). */
let redis: Redis;
let plain: Redis;
beforeAll(async () => {
  server = await startRedisServer();
  gw = await privateGateway({ REDIS_URL: server.url });
  redis = client(gw, { autoPipelining: false });
  plain = client(gw, { autoPipelining: false, base64: false });
});
afterAll(async () => {
  await gw.close();
  await server.stop();
});

/** Commands the gateway received while `fn` ran. */
async function commandsDuring(fn: () => Promise<unknown>): Promise<Record<string, number>> {
  const before = commandCounts(await scrape(gw));
  await fn();
  return commandDelta(before, commandCounts(await scrape(gw)));
}

const LIMITERS = [
  { name: 'sliding window', limiter: () => Ratelimit.slidingWindow(5, '1 h') },
  { name: 'fixed window', limiter: () => Ratelimit.fixedWindow(5, '1 h') },
  { name: 'token bucket', limiter: () => Ratelimit.tokenBucket(1, '1 h', 5) },
];

describe.each(LIMITERS)('@upstash/ratelimit $name', ({ limiter }) => {
  function make(autoPipelining: boolean) {
    return new Ratelimit({
      redis: client(gw, { autoPipelining }),
      limiter: limiter(),
      prefix: prefix(),
      // Every call must reach Redis (no in-memory block cache), and a slow answer must fail the
      // test rather than be let through by the library's fail-open timeout.
      ephemeralCache: false,
      timeout: 0,
    });
  }

  test.each([true, false])('enforces the limit (auto-pipelining %s)', async (autoPipelining) => {
    const rl = make(autoPipelining);
    const id = randomUUID();
    const results = [];
    for (let i = 0; i < 7; i++) results.push(await rl.limit(id));
    expect(results.map((r) => r.success)).toEqual([true, true, true, true, true, false, false]);
    expect(results.map((r) => r.remaining)).toEqual([4, 3, 2, 1, 0, 0, 0]);
    for (const r of results) expect(r.limit).toBe(5);
    // Another identifier has its own budget.
    expect((await rl.limit(randomUUID())).success).toBe(true);
    expect((await rl.getRemaining(id)).remaining).toBe(0);
  });

  test('a warm limit() is exactly one EVALSHA, and no EVAL', async () => {
    const rl = make(true);
    const id = randomUUID();
    // Cold: EVALSHA of the original script fails with NOSCRIPT (or hits a script another test
    // loaded), then EVAL; either way the gateway now knows the script.
    await rl.limit(id);
    for (let round = 0; round < 3; round++) {
      const delta = await commandsDuring(() => rl.limit(id));
      expect(delta, `commands seen for one warm limit(): ${JSON.stringify(delta)}`).toEqual({ evalsha: 1 });
    }
  });
});

describe('script shebangs with flags stock Redis does not know', () => {
  function script(body: string): string {
    return `#!lua flags=allow-key-locking\n-- ${randomUUID()}\n${body}`;
  }

  test('EVAL, then EVALSHA of the original text\'s SHA, work', async () => {
    const k = `${prefix()}k`;
    const text = script("redis.call('incrby', KEYS[1], ARGV[1]); return redis.call('get', KEYS[1])");
    expect(await redis.eval(text, [k], ['2'])).toBe(2);
    expect(await redis.evalsha(sha1(text), [k], ['3'])).toBe(5);
    expect(await plain.evalsha(sha1(text), [k], ['4'])).toBe(9);
  });

  test('SCRIPT LOAD answers the SHA of the original text; SCRIPT EXISTS and EVALSHA know it', async () => {
    const text = script('return ARGV[1]');
    const sha = sha1(text);
    expect(await redis.scriptExists(sha)).toEqual([0]);
    expect(await redis.scriptLoad(text)).toBe(sha);
    expect(await plain.scriptLoad(text)).toBe(sha);
    expect(await redis.scriptExists(sha, '0'.repeat(40))).toEqual([1, 0]);
    expect(await redis.evalsha(sha, [], ['hello'])).toBe('hello');
    const raw = await post(gw, '/', ['script', 'load', text], { base64: true });
    expect(raw.json, show(raw)).toEqual({ result: Buffer.from(sha).toString('base64') });
  });

  test('createScript with the flag: EVALSHA, NOSCRIPT, EVAL, then warm EVALSHA only', async () => {
    const k = `${prefix()}k`;
    const s = redis.createScript<number>(script("return redis.call('incr', KEYS[1])"));
    const cold = await commandsDuring(async () => expect(await s.exec([k], [])).toBe(1));
    expect(cold).toEqual({ evalsha: 1, eval: 1 });
    const warm = await commandsDuring(async () => expect(await s.exec([k], [])).toBe(2));
    expect(warm).toEqual({ evalsha: 1 });
  });

  test('known flags are kept: no-writes still forbids writes', async () => {
    const k = `${prefix()}k`;
    const text = `#!lua flags=no-writes,allow-key-locking\n-- ${randomUUID()}\nreturn redis.call('set', KEYS[1], 'x')`;
    const res = await post(gw, '/', ['eval', text, 1, k]);
    expect(res.status, show(res)).toBe(400);
    expect(errorOf(res), show(res)).toMatch(/Write commands are not allowed from read-only scripts/);
    const read = `#!lua flags=no-writes,allow-key-locking\n-- ${randomUUID()}\nreturn redis.call('exists', KEYS[1])`;
    const ok = await post(gw, '/', ['eval_ro', read, 1, k]);
    expect(ok.json, show(ok)).toEqual({ result: 0 });
  });

  test('Redis\'s own shebang errors still come through verbatim', async () => {
    const res = await post(gw, '/', ['eval', '#!lua name=x\nreturn 1', 0]);
    expect(res.status, show(res)).toBe(400);
    expect(errorOf(res), show(res)).toMatch(/shebang/i);
  });
});

describe('NOSCRIPT', () => {
  test('EVALSHA of an unknown SHA on / is 400 with NOSCRIPT verbatim', async () => {
    const res = await post(gw, '/', ['evalsha', sha1(randomUUID()), 0]);
    expect(res.status, show(res)).toBe(400);
    expect(errorOf(res), show(res)).toMatch(/^NOSCRIPT /);
  });

  test('the client sees NOSCRIPT in its error, which is what its EVAL fallback looks for', async () => {
    await expect(redis.evalsha(sha1(randomUUID()), [], [])).rejects.toThrow(/NOSCRIPT/);
  });
});
