/**
 * Every command family through the real client, in the four ways the client talks to the gateway:
 * auto-pipelining on (batches to /pipeline) or off (one command per POST /), base64 replies or
 * plain JSON. Reads are checked with a client that does not JSON.parse replies, so a value comes
 * back with its exact text.
 */
import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { CLIENT_MODES, client, clientIn, post, prefix, shared, show } from './helpers.ts';

const STRINGS: readonly string[] = [
  '123',
  '1e3',
  '-0',
  '0x10',
  '9007199254740993',
  '1.10',
  '{"a":1,"b":[true,null,"x"]}',
  '"quoted"',
  '[1,2]',
  'OK',
  'PONG',
  'true',
  'null',
  // Valid base64 of "OK" and "123": a gateway that forgets to encode would be decoded into these.
  'T0s=',
  'MTIz',
  'héllo wörld ✓ 日本語 한국어 עברית',
  '🚀👩‍👩‍👧 emoji',
  '',
  '  spaces around  ',
  'line1\nline2\ttab\r\n',
  'comma,separated,"quotes"',
];

/** A flat `[field, value, …]` reply as an object. */
function pairs(flat: unknown): Record<string, unknown> {
  if (!Array.isArray(flat)) throw new Error(`expected a flat array, got ${JSON.stringify(flat)}`);
  const out: Record<string, unknown> = {};
  for (let i = 0; i < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}

describe.each(CLIENT_MODES)('command families ($name)', (mode) => {
  const redis = clientIn(mode, shared());
  const exact = clientIn(mode, shared(), false);
  // An independent reader: base64, one request per command, no JSON.parse.
  const reader = client(shared(), { autoPipelining: false, base64: true, deserialize: false });

  test('strings keep their exact text, numbers-looking, JSON, "OK", unicode and empty included', async () => {
    const p = prefix();
    const keys = STRINGS.map((_, i) => `${p}s${i}`);
    const written = await Promise.all(STRINGS.map((v, i) => exact.set(keys[i] ?? '', v)));
    expect(written).toEqual(STRINGS.map(() => 'OK'));
    expect(await Promise.all(keys.map((k) => exact.get<string>(k)))).toEqual(STRINGS);
    // MGET puts every value inside an array, where an unencoded "OK" or "T0s=" would be mangled.
    expect(await exact.mget<string[]>(...keys)).toEqual(STRINGS);
    expect(await reader.mget<string[]>(...keys)).toEqual(STRINGS);
    const lengths = await Promise.all(keys.map((k) => exact.strlen(k)));
    expect(lengths).toEqual(STRINGS.map((v) => Buffer.byteLength(v, 'utf8')));
  });

  test('the client deserializes JSON values as it does against Upstash', async () => {
    const p = prefix();
    const doc = { a: 1, nested: { b: [1, 2, 'three'], c: null }, s: 'ü' };
    await redis.set(`${p}doc`, doc);
    await redis.set(`${p}num`, 123);
    await redis.set(`${p}text`, 'plain text');
    const [d, n, t, missing] = await Promise.all([
      redis.get(`${p}doc`),
      redis.get(`${p}num`),
      redis.get(`${p}text`),
      redis.get(`${p}missing`),
    ]);
    expect(d).toEqual(doc);
    expect(n).toBe(123);
    expect(t).toBe('plain text');
    expect(missing).toBeNull();
    expect(await reader.get(`${p}doc`)).toBe(JSON.stringify(doc));
  });

  test('string commands: SET options, INCR family, APPEND, GETRANGE, GETDEL, MSET', async () => {
    const p = prefix();
    expect(await redis.set(`${p}nx`, 'first', { nx: true })).toBe('OK');
    expect(await redis.set(`${p}nx`, 'second', { nx: true })).toBeNull();
    expect(await redis.set(`${p}get`, 'new', { get: true })).toBeNull();
    expect(await exact.set(`${p}get`, 'newer', { get: true })).toBe('new');
    expect(await redis.set(`${p}px`, 'v', { px: 60_000 })).toBe('OK');
    const pttl = await redis.pttl(`${p}px`);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000);
    expect(await redis.incr(`${p}n`)).toBe(1);
    expect(await redis.incrby(`${p}n`, 41)).toBe(42);
    expect(await redis.decrby(`${p}n`, 50)).toBe(-8);
    expect(await redis.decr(`${p}n`)).toBe(-9);
    expect(await redis.incrbyfloat(`${p}f`, 1.5)).toBe(1.5);
    expect(await exact.incrbyfloat(`${p}f`, 0.25)).toBe('1.75');
    expect(await redis.append(`${p}a`, 'héllo')).toBe(6);
    expect(await redis.append(`${p}a`, ' 🚀')).toBe(11);
    expect(await exact.getrange(`${p}a`, 0, 5)).toBe('héllo');
    expect(await redis.mset({ [`${p}m1`]: 'one', [`${p}m2`]: 'two' })).toBe('OK');
    expect(await exact.getdel(`${p}m1`)).toBe('one');
    expect(await redis.exists(`${p}m1`, `${p}m2`, `${p}a`)).toBe(2);
    expect(await reader.get(`${p}n`)).toBe('-9');
  });

  test('keys: EXPIRE, TTL, TYPE, RENAME, DEL, SCAN', async () => {
    const p = prefix();
    await Promise.all([redis.set(`${p}a`, '1'), redis.hset(`${p}h`, { f: 'v' }), redis.rpush(`${p}l`, 'x')]);
    expect(await redis.expire(`${p}a`, 100)).toBe(1);
    const ttl = await redis.ttl(`${p}a`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(100);
    expect(await Promise.all([redis.type(`${p}a`), redis.type(`${p}h`), redis.type(`${p}l`), redis.type(`${p}none`)]))
      .toEqual(['string', 'hash', 'list', 'none']);
    expect(await redis.rename(`${p}a`, `${p}b`)).toBe('OK');
    const found: string[] = [];
    let cursor: string | number = 0;
    for (let i = 0; i < 100; i++) {
      const [next, keys]: [string | number, string[]] = await redis.scan(cursor, { match: `${p}*`, count: 1000 });
      found.push(...keys);
      cursor = next;
      if (String(cursor) === '0') break;
    }
    expect(found.sort()).toEqual([`${p}b`, `${p}h`, `${p}l`]);
    expect(await redis.del(`${p}b`, `${p}h`, `${p}l`, `${p}none`)).toBe(3);
  });

  test('server replies: PING, ECHO, TIME, DBSIZE', async () => {
    expect(await redis.ping()).toBe('PONG');
    expect(await exact.ping(['héllo'])).toBe('héllo');
    expect(await exact.echo('OK')).toBe('OK');
    const time = await exact.time();
    expect(time).toHaveLength(2);
    expect(Number(time[0])).toBeGreaterThan(1_600_000_000);
    expect(await redis.dbsize()).toBeGreaterThan(0);
  });

  test('exact integers past 2^53 reach the client as the exact decimal text', async () => {
    const p = prefix();
    await exact.set(`${p}big`, '9007199254740990');
    await redis.incrby(`${p}big`, 3);
    expect(await exact.get(`${p}big`)).toBe('9007199254740993');
    expect(await reader.get(`${p}big`)).toBe('9007199254740993');
  });

  test('hashes', async () => {
    const p = prefix();
    const h = `${p}h`;
    expect(await exact.hset(h, { f1: 'v1', n: '10', ok: 'OK', uni: 'ü🚀', empty: '' })).toBe(5);
    expect(await exact.hget(h, 'uni')).toBe('ü🚀');
    // Without deserialization the client hands back the raw reply: a flat field/value array.
    expect(pairs(await exact.hgetall(h))).toEqual({ f1: 'v1', n: '10', ok: 'OK', uni: 'ü🚀', empty: '' });
    expect(await redis.hgetall(h)).toEqual({ f1: 'v1', n: 10, ok: 'OK', uni: 'ü🚀', empty: '' });
    expect(await exact.hmget(h, 'f1', 'ok', 'nope')).toEqual(['v1', 'OK', null]);
    expect(await redis.hmget(h, 'f1', 'ok', 'nope')).toEqual({ f1: 'v1', ok: 'OK', nope: null });
    expect(await redis.hincrby(h, 'n', 5)).toBe(15);
    expect(await redis.hincrbyfloat(h, 'n', 0.5)).toBe(15.5);
    expect(await redis.hexists(h, 'f1')).toBe(1);
    expect(await redis.hexists(h, 'nope')).toBe(0);
    expect(await redis.hsetnx(h, 'f1', 'other')).toBe(0);
    expect(await redis.hstrlen(h, 'uni')).toBe(Buffer.byteLength('ü🚀'));
    expect(await redis.hlen(h)).toBe(5);
    expect((await exact.hkeys(h)).sort()).toEqual(['empty', 'f1', 'n', 'ok', 'uni']);
    expect((await exact.hvals(h)).sort()).toEqual(['', '15.5', 'OK', 'v1', 'ü🚀']);
    expect(await redis.hdel(h, 'f1', 'nope')).toBe(1);
    const [cursor, fields] = await exact.hscan(h, 0, { count: 100 });
    expect(String(cursor)).toBe('0');
    expect(fields).toHaveLength(8);
    expect(await exact.hrandfield(h)).toMatch(/^(n|ok|uni|empty)$/);
  });

  test('lists', async () => {
    const p = prefix();
    const l = `${p}l`;
    expect(await redis.rpush(l, 'a', 'b', 'c', 'OK')).toBe(4);
    expect(await redis.lpush(l, 'z')).toBe(5);
    expect(await exact.lrange(l, 0, -1)).toEqual(['z', 'a', 'b', 'c', 'OK']);
    expect(await redis.llen(l)).toBe(5);
    expect(await exact.lindex(l, -1)).toBe('OK');
    expect(await redis.lset(l, 1, 'A')).toBe('OK');
    expect(await redis.linsert(l, 'after', 'A', 'a2')).toBe(6);
    expect(await redis.lpos(l, 'b')).toBe(3);
    expect(await redis.lrem(l, 0, 'c')).toBe(1);
    expect(await exact.lpop(l)).toBe('z');
    expect(await exact.rpop(l)).toBe('OK');
    expect(await exact.lmove(l, `${p}l2`, 'left', 'right')).toBe('A');
    expect(await redis.ltrim(l, 0, 0)).toBe('OK');
    expect(await exact.lrange(l, 0, -1)).toEqual(['a2']);
    expect(await exact.lrange(`${p}l2`, 0, -1)).toEqual(['A']);
    expect(await exact.lpop(`${p}empty`)).toBeNull();
  });

  test('sets', async () => {
    const p = prefix();
    const s1 = `${p}s1`;
    const s2 = `${p}s2`;
    expect(await redis.sadd(s1, 'a', 'b', 'c', 'ü')).toBe(4);
    expect(await redis.sadd(s2, 'b', 'c', 'd')).toBe(3);
    expect((await exact.smembers(s1)).sort()).toEqual(['a', 'b', 'c', 'ü']);
    expect(await redis.sismember(s1, 'ü')).toBe(1);
    expect(await redis.smismember(s1, ['a', 'd'])).toEqual([1, 0]);
    expect(await redis.scard(s1)).toBe(4);
    expect((await exact.sinter(s1, s2)).sort()).toEqual(['b', 'c']);
    expect((await exact.sunion(s1, s2)).sort()).toEqual(['a', 'b', 'c', 'd', 'ü']);
    expect((await exact.sdiff(s1, s2)).sort()).toEqual(['a', 'ü']);
    expect(await redis.srem(s1, 'a', 'zz')).toBe(1);
    expect(await exact.srandmember(s2)).toMatch(/^[bcd]$/);
    const popped = await exact.spop<string[]>(s2, 3);
    expect([...(popped ?? [])].sort()).toEqual(['b', 'c', 'd']);
    expect(await redis.scard(s2)).toBe(0);
  });

  test('sorted sets with scores', async () => {
    const p = prefix();
    const z = `${p}z`;
    expect(await redis.zadd(z, { score: 1.5, member: 'a' }, { score: -2, member: 'b' }, { score: 1000, member: 'c' })).toBe(3);
    expect(await redis.zrange(z, 0, -1, { withScores: true })).toEqual(['b', -2, 'a', 1.5, 'c', 1000]);
    expect(await exact.zrange(z, 0, -1, { withScores: true })).toEqual(['b', '-2', 'a', '1.5', 'c', '1000']);
    expect(await redis.zscore(z, 'a')).toBe(1.5);
    expect(await redis.zincrby(z, 2.25, 'a')).toBe(3.75);
    expect(await redis.zrank(z, 'a')).toBe(1);
    expect(await redis.zrevrank(z, 'a')).toBe(1);
    expect(await redis.zcount(z, 0, '+inf')).toBe(2);
    expect(await exact.zrange(z, '-inf', 10, { byScore: true })).toEqual(['b', 'a']);
    expect(await redis.zmscore(z, ['a', 'b', 'nope'])).toEqual([3.75, -2, null]);
    expect(await redis.zcard(z)).toBe(3);
    expect(await redis.zunionstore(`${p}u`, 1, [z], { weights: [2] })).toBe(3);
    expect(await redis.zrange(`${p}u`, 0, 0, { withScores: true })).toEqual(['b', -4]);
    expect(await redis.zpopmin(z, 1)).toEqual(['b', -2]);
    expect(await redis.zrem(z, 'c', 'nope')).toBe(1);
    expect(await redis.zrange(z, 0, -1, { withScores: true })).toEqual(['a', 3.75]);
  });

  test('streams with consumer groups: XADD, XGROUP, XREADGROUP, XACK, XPENDING, XAUTOCLAIM, XCLAIM', async () => {
    const p = prefix();
    const s = `${p}stream`;
    const ids = [
      await exact.xadd(s, '*', { job: 'one', n: '1' }),
      await exact.xadd(s, '*', { job: 'two', n: '2' }),
      await exact.xadd(s, '*', { job: 'three', text: 'ü,🚀' }),
    ];
    for (const id of ids) expect(id).toMatch(/^\d+-\d+$/);
    expect(await redis.xlen(s)).toBe(3);
    expect(await exact.xgroup(s, { type: 'CREATE', group: 'g', id: '0' })).toBe('OK');

    const first = await exact.xreadgroup('g', 'c1', s, '>', { count: 2 });
    expect(first).toEqual([[s, [[ids[0], ['job', 'one', 'n', '1']], [ids[1], ['job', 'two', 'n', '2']]]]]);
    expect(await redis.xack(s, 'g', ids[0] ?? '')).toBe(1);
    const pending = await exact.xpending(s, 'g', '-', '+', 10);
    expect(pending).toHaveLength(1);
    expect(pending[0]).toEqual([ids[1], 'c1', expect.any(Number), 1]);

    const claimed = await exact.xautoclaim(s, 'g', 'c2', 0, '0');
    expect(claimed[1]).toEqual([[ids[1], ['job', 'two', 'n', '2']]]);

    const third = await exact.xreadgroup('g', 'c1', s, '>');
    expect(third).toEqual([[s, [[ids[2], ['job', 'three', 'text', 'ü,🚀']]]]]);
    const moved = await exact.xclaim(s, 'g', 'c3', 0, ids[2] ?? '');
    expect(moved).toEqual([[ids[2], ['job', 'three', 'text', 'ü,🚀']]]);
    // Nothing new: XREADGROUP without BLOCK answers nil at once.
    expect(await exact.xreadgroup('g', 'c1', s, '>')).toBeNull();

    const byConsumer = await exact.xpending(s, 'g', '-', '+', 10);
    expect(byConsumer.map((e) => (Array.isArray(e) ? e[1] : undefined))).toEqual(['c2', 'c3']);
    expect(await redis.xack(s, 'g', [ids[1] ?? '', ids[2] ?? ''])).toBe(2);
    expect(await exact.xpending(s, 'g', '-', '+', 10)).toEqual([]);
    expect(await redis.xrange(s, '-', '+')).toEqual({
      [ids[0] ?? '']: { job: 'one', n: 1 },
      [ids[1] ?? '']: { job: 'two', n: 2 },
      [ids[2] ?? '']: { job: 'three', text: 'ü,🚀' },
    });
  });

  test('bitmaps: SETBIT, GETBIT, BITCOUNT, BITPOS', async () => {
    const b = `${prefix()}bits`;
    expect(await redis.setbit(b, 7, 1)).toBe(0);
    expect(await redis.setbit(b, 7, 1)).toBe(1);
    expect(await redis.setbit(b, 100, 1)).toBe(0);
    expect(await redis.getbit(b, 7)).toBe(1);
    expect(await redis.getbit(b, 8)).toBe(0);
    expect(await redis.bitcount(b, 0, -1)).toBe(2);
    expect(await redis.bitcount(b, 0, 0)).toBe(1);
    expect(await redis.bitpos(b, 1)).toBe(7);
    expect(await redis.bitpos(b, 0)).toBe(0);
    expect(await redis.strlen(b)).toBe(13);
  });

  test('HyperLogLog: PFADD, PFCOUNT, PFMERGE', async () => {
    const p = prefix();
    expect(await redis.pfadd(`${p}h1`, 'a', 'b', 'c')).toBe(1);
    expect(await redis.pfadd(`${p}h1`, 'a')).toBe(0);
    expect(await redis.pfadd(`${p}h2`, 'c', 'd')).toBe(1);
    expect(await redis.pfcount(`${p}h1`)).toBe(3);
    expect(await redis.pfmerge(`${p}m`, `${p}h1`, `${p}h2`)).toBe('OK');
    expect(await redis.pfcount(`${p}m`)).toBe(4);
  });

  test('geo: GEOADD, GEODIST, GEOPOS, GEOSEARCH', async () => {
    const g = `${prefix()}geo`;
    expect(await redis.geoadd(g, { longitude: 13.361389, latitude: 38.115556, member: 'Palermo' }, { longitude: 15.087269, latitude: 37.502669, member: 'Catania' })).toBe(2);
    expect(await redis.geodist(g, 'Palermo', 'Catania', 'KM')).toBeCloseTo(166.2742, 3);
    const [pos] = await redis.geopos(g, 'Palermo');
    expect(pos?.lng).toBeCloseTo(13.361389, 5);
    expect(pos?.lat).toBeCloseTo(38.115556, 5);
    const found = await redis.geosearch(g, { type: 'FROMLONLAT', coordinate: { lon: 15, lat: 37 } }, { type: 'BYRADIUS', radius: 200, radiusType: 'KM' }, 'ASC', { withDist: true });
    expect(found.map((f) => f.member)).toEqual(['Catania', 'Palermo']);
    expect(found[0]?.dist).toBeCloseTo(56.4413, 3);
    const near = await redis.geosearch(g, { type: 'FROMMEMBER', member: 'Palermo' }, { type: 'BYRADIUS', radius: 100, radiusType: 'KM' }, 'ASC');
    expect(near.map((f) => f.member)).toEqual(['Palermo']);
  });

  test('Lua replies: nested tables, integers, nil, status, and an error inside a table', async () => {
    const k = `${prefix()}lua`;
    expect(await exact.eval("return {1, {2, {'a', 'OK'}}, 'c', redis.status_reply('FINE')}", [], [])).toEqual([1, [2, ['a', 'OK']], 'c', 'FINE']);
    expect(await redis.eval('return 42', [], [])).toBe(42);
    expect(await redis.eval('return -7', [], [])).toBe(-7);
    expect(await redis.eval('return 3.99', [], [])).toBe(3);
    expect(await redis.eval('return nil', [], [])).toBeNull();
    expect(await redis.eval('return true', [], [])).toBe(1);
    expect(await redis.eval('return false', [], [])).toBeNull();
    expect(await exact.eval("return redis.status_reply('FINE')", [], [])).toBe('FINE');
    expect(await exact.eval("return redis.call('set', KEYS[1], ARGV[1])", [k], ['OK'])).toBe('OK');
    expect(await exact.eval("return {redis.call('get', KEYS[1]), ARGV[1]}", [k], ['ü🚀'])).toEqual(['OK', 'ü🚀']);
    await expect(redis.eval("return redis.error_reply('MYERR boom')", [], [])).rejects.toThrow('MYERR boom');
    const withError = await exact.eval<[], unknown[]>("return {1, redis.pcall('incr', KEYS[1]), 'after'}", [k], []);
    expect(withError).toEqual([1, { error: 'ERR value is not an integer or out of range' }, 'after']);
    expect(await exact.evalRo("return redis.call('get', KEYS[1])", [k], [])).toBe('OK');
  });

  test('EVALSHA after SCRIPT LOAD, and createScript (EVALSHA, EVAL on NOSCRIPT)', async () => {
    const tag = prefix();
    const script = `-- ${tag}\nreturn tonumber(ARGV[1]) * 2`;
    const sha = createHash('sha1').update(script).digest('hex');
    await expect(redis.evalsha(sha, [], ['1'])).rejects.toThrow(/NOSCRIPT/);
    // One transaction, so a SCRIPT FLUSH from another suite cannot land between LOAD and EVALSHA.
    const [loaded, exists, doubled] = await redis.multi().scriptLoad(script).scriptExists(sha, '0'.repeat(40)).evalsha(sha, [], ['21']).exec();
    expect(loaded).toBe(sha);
    expect(exists).toEqual([1, 0]);
    expect(doubled).toBe(42);
    const fresh = redis.createScript<number>(`-- ${tag} created\nreturn tonumber(ARGV[1]) + 1`);
    expect(await fresh.exec([], ['1'])).toBe(2);
    expect(await fresh.exec([], ['2'])).toBe(3);
  });

  test('PUBLISH is an ordinary command', async () => {
    expect(await redis.publish(`${prefix()}nobody-listens`, 'hello')).toBe(0);
  });
});

describe('integers are exact JSON numbers, past 2^53 and up to 2^63-1', () => {
  const gw = shared();

  test.each([
    { route: '/', base64: false },
    { route: '/', base64: true },
    { route: '/pipeline', base64: false },
    { route: '/pipeline', base64: true },
    { route: '/multi-exec', base64: true },
  ])('INCRBY to 9007199254740993 on $route (base64 $base64)', async ({ route, base64 }) => {
    const k = `${prefix()}big`;
    const set = await post(gw, '/', ['set', k, '9007199254740990']);
    expect(set.status, show(set)).toBe(200);
    const cmd = ['incrby', k, 3];
    const res = await post(gw, route, route === '/' ? cmd : [cmd], { base64 });
    expect(res.status, show(res)).toBe(200);
    expect(res.text).toBe(route === '/' ? '{"result":9007199254740993}' : '[{"result":9007199254740993}]');
    const get = await post(gw, '/', ['get', k], { base64 });
    const digits = '9007199254740993';
    expect(get.text).toBe(`{"result":"${base64 ? Buffer.from(digits).toString('base64') : digits}"}`);
  });

  test('INCR to 2^63-1 keeps every digit; one more overflows with Redis\'s error', async () => {
    const k = `${prefix()}max`;
    await post(gw, '/', ['set', k, '9223372036854775806']);
    const max = await post(gw, '/', ['incr', k]);
    expect(max.text).toBe('{"result":9223372036854775807}');
    const over = await post(gw, '/', ['incr', k]);
    expect(over.status, show(over)).toBe(400);
    expect(over.json).toEqual({ error: 'ERR increment or decrement would overflow' });
    const min = await post(gw, '/', ['incrby', `${k}:neg`, '-9223372036854775808']);
    expect(min.text).toBe('{"result":-9223372036854775808}');
  });

  test('a Lua reply keeps big integers held as strings exact (Lua numbers themselves are doubles)', async () => {
    const k = `${prefix()}lua`;
    await post(gw, '/', ['set', k, '9007199254740993']);
    const res = await post(gw, '/', ['eval', "return {redis.call('get', KEYS[1]), redis.call('strlen', KEYS[1])}", 1, k]);
    expect(res.text).toBe('{"result":["9007199254740993",16]}');
  });
});
