/**
 * Binary safety. JSON strings cannot carry bytes that are not UTF-8, so through the client every
 * Unicode scalar value must survive (all of the BMP outside the surrogates, astral characters, NUL);
 * arbitrary bytes go in through the path form (percent-encoded, or a POST body) and come back
 * exactly with `Upstash-Encoding: base64`.
 */
import { describe, expect, test } from 'vitest';
import { CLIENT_MODES, clientIn, post, prefix, raw, shared, show } from './helpers.ts';

function range(from: number, to: number): string {
  let s = '';
  for (let cp = from; cp <= to; cp++) s += String.fromCodePoint(cp);
  return s;
}

/** Every BMP code point except NUL and the surrogates, in one string (about 190 KB of UTF-8). */
const BMP = range(0x01, 0xd7ff) + range(0xe000, 0xffff);
const ASTRAL = String.fromCodePoint(0x10000, 0x1f680, 0x1f469, 0x200d, 0x1f467, 0x2a6d6, 0xe0001, 0x10fffd, 0x10ffff);
const NUL = 'a\u0000b\u0000';

function b64(bytes: Buffer): string {
  return bytes.toString('base64');
}

describe.each(CLIENT_MODES)('Unicode round trips ($name)', (mode) => {
  const exact = clientIn(mode, shared(), false);

  test('every BMP character outside the surrogates, astral characters and NUL', async () => {
    const p = prefix();
    const values = { bmp: BMP, astral: ASTRAL, nul: NUL, lone: '\u0000', mixed: `${ASTRAL}${NUL}${BMP.slice(0, 500)}` };
    const entries = Object.entries(values);
    await Promise.all(entries.map(([name, v]) => exact.set(`${p}${name}`, v)));
    const back = await Promise.all(entries.map(([name]) => exact.get<string>(`${p}${name}`)));
    entries.forEach(([name, v], i) => {
      const got = back[i];
      // toBe on a 60 000 character string prints poorly; compare lengths and the first difference.
      expect(got?.length, `${name}: length`).toBe(v.length);
      const want = [...v];
      const have = [...(got ?? '')];
      const diff = want.findIndex((ch, j) => have[j] !== ch);
      expect(diff, `${name}: first differing character`).toBe(-1);
    });
    const lengths = await Promise.all(entries.map(([name]) => exact.strlen(`${p}${name}`)));
    expect(lengths).toEqual(entries.map(([, v]) => Buffer.byteLength(v, 'utf8')));
  });

  test('inside array replies: hash fields and values, list elements, set members', async () => {
    const p = prefix();
    const samples = ['\u0000', 'ÿ', '\u07ff', '\u0800', '\ufffd', '\uffff', '😀', String.fromCodePoint(0x10ffff), 'OK'];
    await exact.hset(`${p}h`, Object.fromEntries(samples.map((s, i) => [`${s}:${i}`, `${i}:${s}`])));
    const flat = await exact.hgetall(`${p}h`);
    const got = new Map<string, unknown>();
    if (Array.isArray(flat)) for (let i = 0; i < flat.length; i += 2) got.set(String(flat[i]), flat[i + 1]);
    else throw new Error(`HGETALL without deserialization should be a flat array, got ${JSON.stringify(flat)}`);
    expect(Object.fromEntries(got)).toEqual(Object.fromEntries(samples.map((s, i) => [`${s}:${i}`, `${i}:${s}`])));
    await exact.rpush(`${p}l`, ...samples);
    expect(await exact.lrange(`${p}l`, 0, -1)).toEqual(samples);
    await exact.sadd(`${p}s`, samples[0] ?? '', ...samples.slice(1));
    expect((await exact.smembers(`${p}s`)).sort()).toEqual([...samples].sort());
  });
});

describe('bytes that are not UTF-8 (path form in, base64 out)', () => {
  const gw = shared();
  const bytes = Buffer.from([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x0a, 0x25]);

  test('percent-encoded path arguments are stored byte for byte', async () => {
    const k = `${prefix()}bin`;
    const encoded = [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
    const set = await raw(gw, `/set/${encodeURIComponent(k)}/${encoded}`);
    expect(set.status, show(set)).toBe(200);
    expect(set.json).toEqual({ result: 'OK' });
    const get = await post(gw, '/', ['get', k], { base64: true });
    expect(get.json, show(get)).toEqual({ result: b64(bytes) });
    const len = await post(gw, '/', ['strlen', k]);
    expect(len.json, show(len)).toEqual({ result: bytes.length });
    const inArray = await post(gw, '/pipeline', [['mget', k, k], ['getrange', k, 0, 1]], { base64: true });
    expect(inArray.json, show(inArray)).toEqual([{ result: [b64(bytes), b64(bytes)] }, { result: b64(bytes.subarray(0, 2)) }]);
  });

  test('a POST body is the last argument, byte for byte', async () => {
    const k = `${prefix()}body`;
    const set = await raw(gw, `/set/${encodeURIComponent(k)}`, { method: 'POST', body: bytes });
    expect(set.json, show(set)).toEqual({ result: 'OK' });
    const get = await post(gw, '/', ['get', k], { base64: true });
    expect(get.json, show(get)).toEqual({ result: b64(bytes) });
  });

  test('DUMP (base64 out) then RESTORE (POST body in) round-trips a value exactly', async () => {
    // Through the client this cannot work: it decodes base64 replies with TextDecoder, which turns
    // the non-UTF-8 bytes of a DUMP payload into U+FFFD on its side. The gateway's part is exact.
    const p = prefix();
    await post(gw, '/pipeline', [['hset', `${p}src`, 'f', 'ü🚀', 'g', '12345678901234567890'], ['set', `${p}str`, BMP.slice(100, 300)]]);
    for (const [src, dst] of [[`${p}src`, `${p}dst`], [`${p}str`, `${p}str2`]] as const) {
      const dump = await post(gw, '/', ['dump', src], { base64: true });
      expect(dump.status, show(dump)).toBe(200);
      const payload = Buffer.from(String((dump.json as { result: unknown }).result), 'base64');
      const restore = await raw(gw, `/restore/${encodeURIComponent(dst)}/0`, { method: 'POST', body: payload });
      expect(restore.json, show(restore)).toEqual({ result: 'OK' });
    }
    const check = await post(gw, '/pipeline', [['hgetall', `${p}dst`], ['get', `${p}str2`]]);
    expect(check.json, show(check)).toEqual([
      { result: ['f', 'ü🚀', 'g', '12345678901234567890'] },
      { result: BMP.slice(100, 300) },
    ]);
  });
});
