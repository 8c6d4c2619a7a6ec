/**
 * The request target, taken apart without URL normalisation: `new URL()` would resolve `..` and
 * `%2e%2e` segments and turn `\` into `/`, changing path-form arguments (`/set/a/../b` is the key
 * `a`, `..` and `b` to nobody but the URL parser). Each segment is percent-decoded to bytes on its own.
 */

export interface Target {
  /** The path below the base path, still percent-encoded, starting with `/`. */
  path: string;
  query: URLSearchParams;
}

/**
 * Splits `rawUrl` (`req.url`, origin-form or absolute-form) into path and query; `undefined` when
 * the path is outside `basePath`.
 */
export function splitTarget(rawUrl: string, basePath: string): Target | undefined {
  let rest = rawUrl;
  if (!rest.startsWith('/')) {
    // absolute-form (`http://host/path`), as proxies send it; anything else has no path.
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?]*/i.exec(rest);
    rest = m ? rest.slice(m[0].length) || '/' : `/${rest}`;
  }
  const q = rest.indexOf('?');
  let path = q === -1 ? rest : rest.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : rest.slice(q + 1));
  if (basePath !== '') {
    if (path === basePath) path = '/';
    else if (path.startsWith(`${basePath}/`)) path = path.slice(basePath.length);
    else return undefined;
  }
  return { path, query };
}

/** Percent-decodes a path segment to bytes (binary-safe, unlike decodeURIComponent). */
export function percentDecode(segment: string): Buffer {
  if (!segment.includes('%')) return Buffer.from(segment, 'utf8');
  const bytes: number[] = [];
  for (let i = 0; i < segment.length; i++) {
    const ch = segment[i];
    if (ch === '%' && /^[0-9a-fA-F]{2}$/.test(segment.slice(i + 1, i + 3))) {
      bytes.push(parseInt(segment.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      for (const b of Buffer.from(ch ?? '', 'utf8')) bytes.push(b);
    }
  }
  return Buffer.from(bytes);
}
