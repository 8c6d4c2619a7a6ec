/**
 * `GET /docs`: the API reference page, Scalar (`@scalar/api-reference`, pinned to an exact version
 * in package.json) rendering `/openapi.json`. The Worker serves all of it: the page, and Scalar's
 * standalone browser bundle at `/docs/assets/scalar-<version>.js`, so the page works with no
 * internet, runs only the bytes this deploy was built with, and loads under a strict CSP
 * (`script-src 'self' 'nonce-…'`, nothing from another origin).
 *
 * The bundle is a wrangler `Data` module (the `[[rules]]` of wrangler.toml, which the vitest pool
 * reads too): its bytes are served as they are in node_modules, and the `<script>` carries their
 * Subresource Integrity hash, computed from those same bytes once per isolate. Its URL names the
 * version, so it is cached for a year as immutable; an upgrade changes the URL.
 *
 * Not `@scalar/hono-api-reference`: its page takes a `cdn` URL but writes the `<script>` tags
 * itself (`getScriptTags` of `@scalar/client-side-rendering`), with no way to add `integrity` or a
 * nonce, so its inline config script would need `script-src 'unsafe-inline'`.
 *
 * Size: the bundle is ~4.7 MiB raw, ~1.35 MiB gzip, most of the Worker's upload (`npm run
 * deploy:check` prints the total); Cloudflare compresses `text/javascript` for the browser.
 */
import { Hono } from 'hono';
import { NONCE, secureHeaders } from 'hono/secure-headers';
// Through relative paths: the package's `exports` do not list its browser build or package.json.
import scalarBundle from '../../node_modules/@scalar/api-reference/dist/browser/standalone.js';
import { version as scalarVersion } from '../../node_modules/@scalar/api-reference/package.json';
import type { AppEnv } from '../env.ts';

/** Where the bundle is served, under `/docs`. */
export const SCALAR_ASSET = `/assets/scalar-${scalarVersion}.js`;

let integrity: Promise<string> | undefined;

/**
 * `sha384-<base64>` of the served bundle, for the `<script integrity>`. Computed on first use (a
 * Worker may not do async work at global scope) and kept for the isolate; a failure is not kept.
 */
export function scalarIntegrity(): Promise<string> {
  integrity ??= crypto.subtle.digest('SHA-384', scalarBundle).then(
    (d) => `sha384-${btoa(String.fromCharCode(...new Uint8Array(d)))}`,
    (cause: unknown) => {
      integrity = undefined;
      throw new Error('the docs bundle could not be hashed', { cause });
    },
  );
  return integrity;
}

/**
 * Scalar's configuration: nothing that reaches past this origin (no web fonts from Scalar's CDN, no
 * telemetry, none of its hosted extras: the developer-tools bar, the AI agent), so the page renders
 * the same offline and the CSP refuses nothing it needs.
 */
const CONFIG = { url: '/openapi.json', withDefaultFonts: false, telemetry: false, showDeveloperTools: 'never', agent: { disabled: true } };

/** Inline JSON inside `<script>`: `<` escaped so no value can close the element. */
const scriptJson = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');

function page(nonce: string, sri: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge-redis API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
</head><body>
<div id="app"></div>
<noscript>The API description is at <a href="${CONFIG.url}">${CONFIG.url}</a>.</noscript>
<script src="/docs${SCALAR_ASSET}" integrity="${sri}" nonce="${nonce}"></script>
<script nonce="${nonce}">Scalar.createApiReference('#app', ${scriptJson(CONFIG)});</script>
</body></html>`;
}

const docs = new Hono<AppEnv>();

docs.get(
  '/',
  secureHeaders({
    // Scripts are what a CSP must hold: only this origin's (the bundle, checked by its integrity
    // hash) and the one inline script that carries the nonce. Styles are looser because Scalar
    // writes its theme and component styles as <style> elements at run time, without a nonce
    // (checked in Chromium: with a nonce-only style-src the page renders unstyled).
    contentSecurityPolicy: {
      defaultSrc: ["'none'"],
      scriptSrc: ["'self'", NONCE],
      styleSrc: ["'self'", "'unsafe-inline'"],
      imgSrc: ["'self'", 'data:'],
      fontSrc: ["'self'", 'data:'],
      connectSrc: ["'self'"],
      baseUri: ["'none'"],
      formAction: ["'none'"],
      frameAncestors: ["'none'"],
      objectSrc: ["'none'"],
    },
  }),
  async (c) => {
    const nonce = c.get('secureHeadersNonce');
    if (nonce === undefined) throw new Error('secureHeaders set no nonce');
    // A nonce is per response: never reuse a stored copy.
    c.header('Cache-Control', 'no-store');
    return c.html(page(nonce, await scalarIntegrity()));
  },
);

docs.get(SCALAR_ASSET, (c) =>
  c.body(scalarBundle, 200, {
    'Content-Type': 'text/javascript; charset=utf-8',
    'Cache-Control': 'public, max-age=31536000, immutable',
    'X-Content-Type-Options': 'nosniff',
  }),
);

export default docs;
