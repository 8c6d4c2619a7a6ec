/**
 * The pages in a real Chromium, against the real stack (`npm run dev`: wrangler dev, D1, the
 * gateway, redis-server): the docs page, a real EventSource, and the shop end to end with the
 * browser's own cookies and same-origin checks. Screenshots go to test-results/browser/.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { launchChromium } from './stack.ts';

const SHOTS = join(import.meta.dirname, '..', '..', 'test-results', 'browser');
const app = inject('appUrl');
let browser: Browser;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
});

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Errors the page itself reports (script errors, CSP refusals), which a test must not have. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return errors;
}

/** A checkout made by another client (Node's fetch with its own cookie): one unit of `productId`. */
async function checkoutElsewhere(productId: number): Promise<void> {
  const add = await fetch(`${app}/cart/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ productId, quantity: 1 }) });
  expect(add.status, await add.clone().text()).toBe(200);
  const cookie = (add.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
  const order = await fetch(`${app}/checkout`, { method: 'POST', headers: { cookie, 'idempotency-key': crypto.randomUUID() } });
  expect(order.status, await order.clone().text()).toBe(201);
}

async function stockOf(productId: number): Promise<number> {
  const res = await fetch(`${app}/products/${productId}`);
  const body = (await res.json()) as { stock: number };
  return body.stock;
}

describe('in Chromium', () => {
  test('/docs renders the API operations, offline, with no script error', async () => {
    const page = await browser.newPage();
    const errors = watchErrors(page);
    const outside: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(app) && !r.url().startsWith('data:')) outside.push(r.url());
    });
    await page.goto(`${app}/docs`);
    // Scalar renders the first tag's operations; the others are collapsed in its sidebar until opened.
    await page.getByText('A page of products').first().waitFor({ timeout: 20_000 });
    await expect(page.getByText('One product', { exact: true }).first().isVisible()).resolves.toBe(true);
    await shot(page, 'docs');
    for (const tag of ['cart', 'checkout', 'auth', 'events']) await page.getByText(tag, { exact: true }).first().waitFor();
    await page.getByText('events', { exact: true }).first().click();
    await page.getByText('Live inventory changes (Server-Sent Events)').first().waitFor();
    expect(outside, 'the docs page fetched nothing outside the Worker').toEqual([]);
    expect(errors).toEqual([]);
    await page.close();
  });

  test('a real EventSource on /events/inventory receives the event of a checkout made meanwhile', async () => {
    const page = await browser.newPage();
    await page.goto(`${app}/shop`);
    const received = page.evaluate(() => new Promise<string>((resolve, reject) => {
      const source = new EventSource('/events/inventory');
      const timer = setTimeout(() => reject(new Error('no inventory event in 15 s')), 15_000);
      source.addEventListener('open', () => document.body.setAttribute('data-test-open', '1'));
      source.addEventListener('inventory', (e) => {
        clearTimeout(timer);
        source.close();
        resolve(String((e as MessageEvent).data));
      });
    }));
    await page.waitForSelector('body[data-test-open="1"]', { timeout: 15_000 });
    const productId = 7;
    await checkoutElsewhere(productId);
    const event = JSON.parse(await received) as { type: string; items: { productId: number; stock: number }[] };
    expect(event.type).toBe('inventory.changed');
    expect(event.items).toEqual([{ productId, stock: await stockOf(productId) }]);
    await page.close();
  });

  test('the shop end to end: sign in, list, product, add to cart, cart, checkout; another tab sees the stock live', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = watchErrors(page);
    const user = `shopper${Date.now()}`;

    await page.goto(`${app}/shop/cart`);
    await page.getByText('Your cart is empty').waitFor();
    await page.fill('input[name=username]', user);
    await page.fill('input[name=password]', 'correct horse battery');
    await page.click('button[value=register]');
    await page.getByText(`Signed in as ${user}`).waitFor();
    const cookies = await context.cookies(app);
    // The cookies a deploy sends (the stack runs APP_ENV=production), kept by Chromium over
    // http://127.0.0.1 because a loopback origin is a secure context: session and trusted device.
    for (const name of ['__Host-sid', '__Host-did']) {
      expect(cookies.find((c) => c.name === name), name).toMatchObject({ secure: true, httpOnly: true, path: '/', domain: '127.0.0.1' });
    }

    await page.goto(`${app}/shop`);
    await page.locator('#products li').first().waitFor();
    expect(await page.locator('#products li').count()).toBe(20);
    await page.locator('#live[data-state=open]').waitFor();
    await shot(page, 'shop-list');

    const first = page.locator('#products li a').first();
    const name = (await first.textContent()) ?? '';
    await first.click();
    await page.waitForURL(/\/shop\/products\/\d+$/);
    const productId = Number(/(\d+)$/.exec(page.url())?.[1]);
    await page.locator('h1', { hasText: name }).waitFor();
    const before = await stockOf(productId);
    expect(await page.locator(`[data-stock-for="${productId}"]`).textContent()).toBe(String(before));
    await page.fill('input[name=quantity]', '2');
    await page.click('#add');
    await page.getByText('In your cart: 2').waitFor();
    await shot(page, 'shop-product');

    // A second tab (another visitor) on the list: its live line and stock figure follow the order.
    const watcher = await browser.newPage();
    await watcher.goto(`${app}/shop`);
    await watcher.locator('#live[data-state=open]').waitFor();

    await page.goto(`${app}/shop/cart`);
    await page.locator('#cart tbody tr').first().waitFor();
    expect(await page.locator('#cart tbody tr td').first().textContent()).toBe(name);
    await shot(page, 'shop-cart');
    await page.click('#checkout');
    await page.locator('#order-id').waitFor();
    expect(await page.locator('#order-id').textContent()).toMatch(/\S+/);
    await page.getByText('Your cart is empty').waitFor();
    await shot(page, 'shop-checkout');

    expect(await stockOf(productId)).toBe(before - 2);
    await watcher.locator('#live[data-state=event]').waitFor({ timeout: 15_000 });
    expect(await watcher.locator('#live').textContent()).toContain(`${name}: ${before - 2} left`);
    expect(await watcher.locator(`[data-stock-for="${productId}"]`).textContent()).toBe(String(before - 2));
    await shot(watcher, 'shop-live-inventory');

    expect(errors).toEqual([]);
    await context.close();
    await watcher.close();
  });
});
