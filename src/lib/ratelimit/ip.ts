/**
 * The rate-limit identity of a client address: IPv4 whole, IPv6 as its /64 (one subscriber usually
 * holds a whole /64, so per-address limits would be trivial to dodge). `undefined` when not an IP.
 *
 * @example
 * ipKey('2001:DB8:0:1:aaaa::1'); // "2001:db8:0:1::/64"
 */
export function ipKey(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  let ip = raw.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '');
  const v4 = /(?:^|:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (v4 && v4.slice(1).some((n) => Number(n) > 255)) return undefined;
  if (!ip.includes(':')) return v4 ? ip : undefined;
  if (v4) {
    if (/^(?:0{0,4}:){0,5}:?ffff:/.test(ip.slice(0, v4.index + 1))) return v4.slice(1).join('.'); // IPv4-mapped
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    ip = `${ip.slice(0, v4.index + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = ip.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves[1] ? halves[1].split(':') : [];
  const gap = 8 - head.length - tail.length;
  if (halves.length === 2 ? gap < 1 : gap !== 0) return undefined;
  const all = [...head, ...Array<string>(Math.max(gap, 0)).fill('0'), ...tail];
  if (!all.every((h) => /^[0-9a-f]{1,4}$/.test(h))) return undefined;
  return `${all.slice(0, 4).map((h) => parseInt(h, 16).toString(16)).join(':')}::/64`;
}
