/**
 * The shop page's script and style (src/functions/shop.ts), kept as text the Worker serves at
 * `/shop/app.js` and `/shop/app.css`. Plain browser JavaScript on purpose: the Worker's TypeScript
 * world has no DOM types, and the page is small enough that a bundler would be the larger part.
 * The script only calls the public JSON API, same-origin, so the browser attaches the session
 * cookie and the `Origin` header the CSRF check reads; an order carries an `Idempotency-Key`. It
 * builds the DOM with `textContent` and `append` only: the page's CSP enforces Trusted Types, so a
 * string assigned to `innerHTML` would throw.
 */

export const SHOP_JS = String.raw`'use strict';
const $ = (sel) => document.querySelector(sel);
const money = (n) => '$' + Number(n).toFixed(2);
const view = document.body.dataset.view;
const names = new Map();

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { accept: 'application/json', ...headers }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error((data && (data.detail || data.title)) || ('HTTP ' + res.status));
  return data;
}

function say(text, bad) {
  const el = $('#status');
  if (!el) return;
  el.textContent = text;
  el.className = bad ? 'bad' : '';
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// The live inventory line: one EventSource for the page's life; the browser reconnects by itself.
function live() {
  const line = $('#live');
  const source = new EventSource('/events/inventory');
  source.addEventListener('open', () => { line.textContent = 'Live inventory: connected'; line.dataset.state = 'open'; });
  source.addEventListener('error', () => { line.textContent = 'Live inventory: reconnecting…'; line.dataset.state = 'reconnecting'; });
  source.addEventListener('inventory', (e) => {
    const event = JSON.parse(e.data);
    const parts = event.items.map((i) => (names.get(i.productId) || ('#' + i.productId)) + ': ' + i.stock + ' left');
    line.textContent = 'Live inventory: ' + parts.join(', ');
    line.dataset.state = 'event';
    for (const i of event.items) {
      for (const s of document.querySelectorAll('[data-stock-for="' + i.productId + '"]')) s.textContent = String(i.stock);
    }
  });
}

function who() {
  const name = sessionStorage.getItem('shop:user');
  $('#who').textContent = name ? 'Signed in as ' + name : '';
}

async function list() {
  const page = await api('GET', '/products?pageSize=20');
  const ul = $('#products');
  for (const p of page.items) {
    names.set(p.id, p.name);
    ul.append(el('li', { class: 'card' },
      el('a', { href: '/shop/products/' + p.id, text: p.name }),
      el('span', { class: 'price', text: money(p.price) }),
      el('span', { class: 'stock' }, el('span', { 'data-stock-for': String(p.id), text: String(p.stock) }), ' in stock')));
  }
  say(page.total + ' products');
}

async function product() {
  const id = Number(document.body.dataset.product);
  const p = await api('GET', '/products/' + id);
  names.set(p.id, p.name);
  document.title = p.name + ' · edge-redis shop';
  const qty = el('input', { type: 'number', min: '1', max: '99', value: '1', name: 'quantity', 'aria-label': 'Quantity' });
  const add = el('button', { id: 'add', text: 'Add to cart' });
  const status = el('p', { id: 'status' });
  $('#product').replaceChildren(
    el('h1', { text: p.name }),
    el('p', { class: 'price', text: money(p.price) }),
    el('p', { class: 'stock' }, el('span', { 'data-stock-for': String(p.id), text: String(p.stock) }), ' in stock'),
    el('p', {}, qty, ' ', add),
    status);
  add.addEventListener('click', async () => {
    add.disabled = true;
    try {
      const line = await api('POST', '/cart/items', { productId: p.id, quantity: Number(qty.value) });
      say('In your cart: ' + line.quantity);
    } catch (err) {
      say('Could not add: ' + err.message, true);
    } finally {
      add.disabled = false;
    }
  });
}

async function cart() {
  const body = $('#cart tbody');
  const checkout = $('#checkout');
  const render = async () => {
    const c = await api('GET', '/cart');
    body.replaceChildren(...c.items.map((i) => {
      names.set(i.productId, i.name);
      return el('tr', {}, el('td', { text: i.name }), el('td', { text: String(i.quantity) }), el('td', { text: money(i.lineTotal) }));
    }));
    $('#total').textContent = money(c.total);
    checkout.disabled = c.items.length === 0;
    say(c.items.length ? c.items.length + ' line(s)' : 'Your cart is empty');
  };
  $('#signin').addEventListener('submit', async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const creds = { username: String(form.get('username')), password: String(form.get('password')) };
    try {
      if (e.submitter && e.submitter.value === 'register') await api('POST', '/auth/register', creds);
      const user = await api('POST', '/auth/login', creds);
      sessionStorage.setItem('shop:user', user.username);
      who();
      await render();
    } catch (err) {
      say('Sign-in failed: ' + err.message, true);
    }
  });
  checkout.addEventListener('click', async () => {
    checkout.disabled = true;
    // One key per attempt, kept until it succeeds: a retry after a lost answer never orders twice.
    const key = sessionStorage.getItem('shop:order-key') || crypto.randomUUID();
    sessionStorage.setItem('shop:order-key', key);
    try {
      const order = await api('POST', '/checkout', undefined, { 'idempotency-key': key });
      sessionStorage.removeItem('shop:order-key');
      const section = $('#order');
      section.hidden = false;
      section.replaceChildren(el('h2', { text: 'Order placed' }), el('p', { id: 'order-id', text: order.orderId }),
        el('p', { text: 'Total ' + money(order.total) }));
      await render();
    } catch (err) {
      say('Checkout failed: ' + err.message, true);
      checkout.disabled = false;
    }
  });
  await render();
}

who();
live();
({ list, product, cart })[view]().catch((err) => say('Something went wrong: ' + err.message, true));
`;

export const SHOP_CSS = `body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:52rem;padding:0 1rem;color:#1d232a}
header{display:flex;justify-content:space-between;align-items:center;padding:.8rem 0;border-bottom:1px solid #ddd}
header a{margin-left:.8rem}.brand{font-weight:700;margin:0}
#live{background:#f3f7f1;border:1px solid #cfe3c6;border-radius:.4rem;padding:.4rem .7rem;font-size:.9rem}
#live[data-state=event]{background:#fff7d6;border-color:#ecd67a}
.grid{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:.8rem}
.card{border:1px solid #ddd;border-radius:.5rem;padding:.7rem;display:flex;flex-direction:column;gap:.2rem}
.price{font-weight:600}.stock{color:#555;font-size:.9rem}.bad{color:#b00020}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem;border-bottom:1px solid #eee}
form label{display:block;margin:.3rem 0}button{font:inherit;padding:.35rem .8rem}
footer{margin:2rem 0 1rem;font-size:.85rem}
`;
