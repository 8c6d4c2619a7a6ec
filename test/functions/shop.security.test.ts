/**
 * The shop pages' headers as the Worker sends them: a nonce-based CSP whose nonce is fresh per
 * page and is the one on the page's only script and stylesheet, nothing else allowed to run or
 * load, and no state touched (no session cookie for merely looking). test/browser/shop.security.test.ts
 * checks that Chromium enforces it.
 */
import { describe, expect, it } from 'vitest';
import { callWorker } from '../support/worker.ts';
import { freshIp, shopEnv } from './auth.support.ts';

/** The CSP's directives by name: `script-src` → ["'nonce-…'"]. */
function directives(csp: string): Map<string, string[]> {
  return new Map(
    csp
      .split(';')
      .map((d) => d.trim().split(/\s+/))
      .filter((d) => d[0])
      .map(([name, ...values]) => [name!, values]),
  );
}

const PAGES = ['/shop', '/shop/products/7', '/shop/cart'];

describe('shop pages: CSP', () => {
  it.each(PAGES)('%s allows only its own nonce for scripts and styles, and this origin for connections', async (path) => {
    const res = await callWorker(shopEnv, path, { ip: freshIp() });
    expect(res.status, res.text).toBe(200);
    const csp = res.res.headers.get('content-security-policy') ?? '';
    const d = directives(csp);
    const nonce = /^'nonce-([A-Za-z0-9+/=]{22,})'$/.exec(d.get('script-src')?.[0] ?? '')?.[1];
    expect(nonce, csp).toBeDefined();
    expect(d.get('script-src'), csp).toEqual([`'nonce-${nonce}'`]);
    expect(d.get('style-src'), csp).toEqual([`'nonce-${nonce}'`]);
    expect(d.get('default-src'), csp).toEqual(["'none'"]);
    expect(d.get('connect-src'), csp).toEqual(["'self'"]);
    expect(d.get('base-uri'), csp).toEqual(["'none'"]);
    expect(d.get('frame-ancestors'), csp).toEqual(["'none'"]);
    expect(d.get('require-trusted-types-for'), csp).toEqual(["'script'"]);
    expect(csp).not.toMatch(/'unsafe-(inline|eval|hashes)'/);

    // Every script and stylesheet of the page carries this response's nonce, and there is no inline script.
    const scripts = [...res.text.matchAll(/<script\b[^>]*>/g)].map((m) => m[0]);
    const styles = [...res.text.matchAll(/<link\b[^>]*rel="stylesheet"[^>]*>/g)].map((m) => m[0]);
    expect(scripts).toEqual([`<script src="/shop/app.js" nonce="${nonce}" defer>`]);
    expect(styles).toEqual([`<link rel="stylesheet" href="/shop/app.css" nonce="${nonce}">`]);
    expect(res.text).not.toMatch(/<style\b|\son[a-z]+=/i);

    expect(res.res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.res.headers.get('cache-control')).toBe('no-store');
    expect(res.res.headers.getSetCookie(), 'looking at a page starts no session').toEqual([]);
  });

  it('gives every response a new nonce', async () => {
    const ip = freshIp();
    const nonces = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const res = await callWorker(shopEnv, '/shop', { ip });
      nonces.add(/'nonce-([^']+)'/.exec(res.res.headers.get('content-security-policy') ?? '')?.[1] ?? '');
    }
    expect(nonces.size).toBe(5);
    expect(nonces.has('')).toBe(false);
  });

  it('serves its script and style as such, never sniffed', async () => {
    const ip = freshIp();
    const js = await callWorker(shopEnv, '/shop/app.js', { ip });
    const css = await callWorker(shopEnv, '/shop/app.css', { ip });
    expect(js.res.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(css.res.headers.get('content-type')).toBe('text/css; charset=utf-8');
    for (const r of [js, css]) {
      expect(r.status, r.text).toBe(200);
      expect(r.res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(r.res.headers.get('cross-origin-resource-policy'), 'another site cannot embed them').toBe('same-origin');
    }
    // The script builds the DOM without string-to-HTML sinks (Trusted Types would refuse them).
    expect(js.text).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/);
  });

  it('answers 404 problem+json for a product path that is not an id', async () => {
    const res = await callWorker(shopEnv, '/shop/products/0x7', { ip: freshIp() });
    expect(res.status, res.text).toBe(404);
    expect(res.res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });
});
