/**
 * `GET /docs` and the Scalar bundle the Worker serves for it: no CDN, a pinned version in the
 * bundle's URL, an integrity hash that matches the bytes served, a nonce-based CSP.
 */
import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import pkg from '../../package.json';
import { version as installed } from '../../node_modules/@scalar/api-reference/package.json';
import { freshIp } from './products.support.ts';
import { callWorker, fetchWorker } from '../support/worker.ts';

const get = (path: string) => callWorker(env, path, { ip: freshIp() });

/** The attributes of each `<script>` start tag of `html`. */
function scripts(html: string): Record<string, string>[] {
  return [...html.matchAll(/<script\b([^>]*)>/g)].map((m) =>
    Object.fromEntries([...(m[1] ?? '').matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1] ?? '', a[2] ?? ''])),
  );
}

async function sha384(bytes: ArrayBuffer): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-384', bytes));
  return `sha384-${btoa(String.fromCharCode(...digest))}`;
}

describe('/docs', () => {
  it('pins @scalar/api-reference to an exact version, the one installed', () => {
    expect(pkg.devDependencies['@scalar/api-reference']).toMatch(/^\d+\.\d+\.\d+$/);
    expect(pkg.devDependencies['@scalar/api-reference']).toBe(installed);
  });

  it('is an html page loading the bundle from the Worker, with its integrity hash and the nonce', async () => {
    const r = await get('/docs');
    expect(r.status, r.text).toBe(200);
    expect(r.res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(r.res.headers.get('cache-control')).toBe('no-store');
    expect(r.text).not.toMatch(/https?:\/\//);
    const [bundle, config, ...rest] = scripts(r.text);
    expect(rest).toEqual([]);
    expect(bundle).toEqual({ src: `/docs/assets/scalar-${installed}.js`, integrity: expect.stringMatching(/^sha384-[A-Za-z0-9+/]{64}$/), nonce: expect.any(String) });
    expect(config).toEqual({ nonce: bundle?.['nonce'] });
    expect(r.text).toMatch(/Scalar\.createApiReference\('#app', \{"url":"\/openapi\.json"/);
  });

  it('sends a strict CSP: scripts from this origin or with the nonce, nothing from elsewhere', async () => {
    const r = await get('/docs');
    const csp = r.res.headers.get('content-security-policy') ?? '';
    const nonce = scripts(r.text)[0]?.['nonce'];
    expect(nonce).toMatch(/^[A-Za-z0-9+/=]{16,}$/);
    const directives = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([name = '', ...values]) => [name, values]));
    expect(directives['default-src']).toEqual(["'none'"]);
    expect(directives['script-src']).toEqual(["'self'", `'nonce-${nonce}'`]);
    expect(directives['style-src']).toEqual(["'self'", "'unsafe-inline'"]);
    expect(directives['connect-src']).toEqual(["'self'"]);
    expect(directives['frame-ancestors']).toEqual(["'none'"]);
    expect(csp).not.toMatch(/https?:|\*|'unsafe-eval'|'strict-dynamic'/);
    expect(directives['script-src']).not.toContain("'unsafe-inline'");
  });

  it('uses a fresh nonce for every response', async () => {
    const [a, b] = await Promise.all([get('/docs'), get('/docs')]);
    expect(scripts(a.text)[0]?.['nonce']).not.toBe(scripts(b.text)[0]?.['nonce']);
  });
});

describe('/docs/assets/scalar-<version>.js', () => {
  it('serves the bundle as JavaScript, immutable, with the bytes the integrity attribute names', async () => {
    const page = await get('/docs');
    const [{ src = '', integrity = '' } = {}] = scripts(page.text);
    for (let i = 0; i < 2; i++) {
      // Twice: the module's buffer is served again, not consumed by the first response.
      const res = await fetchWorker(env, src, { headers: { 'cf-connecting-ip': freshIp() } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
      expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      const bytes = await res.arrayBuffer();
      expect(bytes.byteLength).toBeGreaterThan(1_000_000);
      expect(await sha384(bytes)).toBe(integrity);
      expect(new TextDecoder().decode(bytes)).toContain('createApiReference');
    }
  });

  it('answers 404 for any other version', async () => {
    const r = await get('/docs/assets/scalar-0.0.1.js');
    expect(r.status).toBe(404);
  });
});
