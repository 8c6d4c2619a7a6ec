/**
 * `GET /shop`: a small shop page served by the Worker, the way a browser uses the JSON API:
 * product list, product, cart, sign-in, checkout, and a live inventory line fed by
 * `GET /events/inventory` (Server-Sent Events). The pages are server-rendered shells; the script
 * (`/shop/app.js`, ./shop-assets.ts) calls the same routes any client does, with the session cookie
 * the browser keeps and the CSRF rule the browser satisfies by itself (same-origin `fetch` sends
 * `Origin` and `Sec-Fetch-Site: same-origin`, see src/middleware.ts `csrfGuard`).
 *
 * No framework and no CDN: about 6 KB of script and 1 KB of style, served by the Worker, so the
 * page works offline. A strict, nonce-based CSP (hono/secure-headers): a fresh nonce per page, and
 * only the script and stylesheet that carry it load, so markup injected into a page cannot run a
 * script (inline or from this origin) nor restyle it; the script may talk to this origin only
 * (`connect-src 'self'`: the API and the event stream); Trusted Types forbid string-to-DOM sinks
 * (`innerHTML`), which the script does not use. Not part of the API document (HTML for people, not
 * an operation).
 */
import { Hono, type Context } from 'hono';
import { html } from 'hono/html';
import { NONCE, secureHeaders, type SecureHeadersVariables } from 'hono/secure-headers';
import type { HtmlEscapedString } from 'hono/utils/html';
import { SHOP_CSS, SHOP_JS } from './shop-assets.ts';

/** The shop's own env: it runs before the app's services and session (it needs neither), so only the nonce. */
type ShopEnv = { Bindings: Env; Variables: SecureHeadersVariables };

/**
 * The headers of every /shop response. HSTS is left to the zone (Cloudflare's SSL/TLS settings):
 * one route of a Worker should not decide it for the host and its subdomains.
 */
export const shopHeaders = secureHeaders({
  contentSecurityPolicy: {
    defaultSrc: ["'none'"],
    scriptSrc: [NONCE],
    styleSrc: [NONCE],
    connectSrc: ["'self'"],
    imgSrc: ["'self'", 'data:'],
    formAction: ["'self'"],
    baseUri: ["'none'"],
    frameAncestors: ["'none'"],
    requireTrustedTypesFor: ["'script'"],
    trustedTypes: ["'none'"],
  },
  xFrameOptions: 'DENY',
  strictTransportSecurity: false,
});

const shop = new Hono<ShopEnv>();

shop.use(shopHeaders);

type Page = 'list' | 'product' | 'cart';

function page(c: Context<ShopEnv>, view: Page, title: string, main: HtmlEscapedString | Promise<HtmlEscapedString>, data: Record<string, string> = {}) {
  // The nonce is this response's (NONCE made it when the middleware built the policy).
  const nonce = c.get('secureHeadersNonce') ?? '';
  c.header('Cache-Control', 'no-store');
  const attrs = Object.entries(data).map(([k, v]) => html` data-${k}="${v}"`);
  return c.html(html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · edge-redis shop</title>
<link rel="stylesheet" href="/shop/app.css" nonce="${nonce}">
<script src="/shop/app.js" nonce="${nonce}" defer></script>
</head>
<body data-view="${view}"${attrs}>
<header>
  <a href="/shop" class="brand">edge-redis shop</a>
  <nav><a href="/shop">Products</a> <a href="/shop/cart" id="cart-link">Cart</a> <span id="who"></span></nav>
</header>
<p id="live" role="status" aria-live="polite">Live inventory: connecting…</p>
<main>${main}</main>
<footer><a href="/docs">API docs</a></footer>
</body>
</html>`);
}

shop.get('/', (c) => page(c, 'list', 'Products', html`<h1>Products</h1><p id="status">Loading…</p><ul id="products" class="grid"></ul>`));

shop.get('/products/:id{[1-9][0-9]{0,14}}', (c) =>
  page(c, 'product', 'Product', html`<article id="product"><p id="status">Loading…</p></article>`, { product: c.req.param('id') }),
);

shop.get('/cart', (c) =>
  page(c, 'cart', 'Cart', html`<h1>Cart</h1>
<p id="status">Loading…</p>
<table id="cart"><thead><tr><th>Product</th><th>Qty</th><th>Price</th></tr></thead><tbody></tbody><tfoot><tr><th colspan="2">Total</th><td id="total"></td></tr></tfoot></table>
<section id="account">
  <h2>Sign in</h2>
  <form id="signin"><label>Username <input name="username" autocomplete="username" required minlength="3"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required minlength="8"></label>
  <button name="action" value="login">Sign in</button> <button name="action" value="register">Register and sign in</button></form>
</section>
<button id="checkout" disabled>Place order</button>
<section id="order" hidden></section>`),
);

shop.get('/app.js', (c) => {
  c.header('Content-Type', 'text/javascript; charset=utf-8');
  c.header('Cache-Control', 'no-cache');
  return c.body(SHOP_JS);
});

shop.get('/app.css', (c) => {
  c.header('Content-Type', 'text/css; charset=utf-8');
  c.header('Cache-Control', 'no-cache');
  return c.body(SHOP_CSS);
});

export default shop;
