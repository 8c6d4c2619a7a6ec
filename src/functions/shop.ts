/**
 * `GET /shop`: a small shop page served by the Worker, the way a browser uses the JSON API:
 * product list, product, cart, sign-in, checkout, and a live inventory line fed by
 * `GET /events/inventory` (Server-Sent Events). The pages are server-rendered shells; the script
 * (`/shop/app.js`, ./shop-assets.ts) calls the same routes any client does, with the session cookie
 * the browser keeps and the CSRF rule the browser satisfies by itself (same-origin `fetch` sends
 * `Origin` and `Sec-Fetch-Site: same-origin`, see src/middleware.ts `csrfGuard`).
 *
 * No framework and no CDN: a few hundred bytes of CSS and script, served with a strict CSP
 * (`script-src 'self'`, `connect-src 'self'`), so it works offline and nothing else can run in it.
 * Not part of the API document (it is HTML for people, not an operation).
 */
import { Hono, type Context } from 'hono';
import { html } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import type { AppEnv } from '../env.ts';
import { SHOP_CSS, SHOP_JS } from './shop-assets.ts';

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const shop = new Hono<AppEnv>();

type Page = 'list' | 'product' | 'cart';

function page(c: Context<AppEnv>, view: Page, title: string, main: HtmlEscapedString | Promise<HtmlEscapedString>, data: Record<string, string> = {}) {
  c.header('Content-Security-Policy', CSP);
  c.header('Cache-Control', 'no-store');
  c.header('X-Content-Type-Options', 'nosniff');
  const attrs = Object.entries(data).map(([k, v]) => html` data-${k}="${v}"`);
  return c.html(html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · edge-redis shop</title>
<link rel="stylesheet" href="/shop/app.css">
<script src="/shop/app.js" defer></script>
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
  c.header('X-Content-Type-Options', 'nosniff');
  return c.body(SHOP_JS);
});

shop.get('/app.css', (c) => {
  c.header('Content-Type', 'text/css; charset=utf-8');
  c.header('Cache-Control', 'no-cache');
  return c.body(SHOP_CSS);
});

export default shop;
