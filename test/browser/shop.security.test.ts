/**
 * What the shop's defences do in a real browser, not just what the headers say
 * (test/functions/shop.security.test.ts pins those):
 * - the CSP: markup injected into a page (as a stored XSS would put it there) runs no script, inline,
 *   from an attribute or from this very origin without the page's nonce, while the page's own
 *   script works; Trusted Types refuse `innerHTML`;
 * - CSRF: a page of another origin on the same site (127.0.0.1 on another port: the browser sends
 *   the SameSite=Lax session cookie along) cannot log the shopper out, neither by a form nor by a
 *   no-cors fetch: src/middleware.ts `csrfGuard` refuses both with 403, and the session and its cart
 *   are intact afterwards.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { launchChromium } from './stack.ts';

// What the pages of this file put on `window` (read back through page.evaluate).
declare global {
  interface Window {
    cspViolations: string[];
    fire(): Promise<string>;
  }
}

const app = inject('appUrl');
let browser: Browser;
/** Another origin on the same site as the app: a page the shopper happens to visit. */
let attacker: Server;
let attackerUrl: string;

beforeAll(async () => {
  browser = await launchChromium();
  attacker = createServer((req, res) => {
    const form = `<form id="f" method="post" action="${app}/auth/logout"></form>`;
    const script = `<script>window.fire = () => fetch(${JSON.stringify(`${app}/auth/logout`)}, { method: 'POST', mode: 'no-cors', credentials: 'include' }).then(() => 'sent', (e) => 'failed: ' + e.message);</script>`;
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(`<!doctype html><title>elsewhere</title>${form}${script}`);
  });
  await new Promise<void>((resolve) => attacker.listen({ host: '127.0.0.1', port: 0 }, () => resolve()));
  attackerUrl = `http://127.0.0.1:${(attacker.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await browser?.close();
  await new Promise<void>((resolve) => (attacker ? attacker.close(() => resolve()) : resolve()));
});

/** Records the CSP violations the page reports, from before its first script. */
async function recordViolations(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const seen: string[] = [];
    Object.defineProperty(window, 'cspViolations', { value: seen });
    document.addEventListener('securitypolicyviolation', (e) => seen.push(`${e.effectiveDirective} ${e.blockedURI}`));
  });
}

/** Registers and logs in from the shop page itself, so the browser holds the session cookie. */
async function signedIn(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${app}/shop`);
  const creds = { username: `csrf${Date.now()}`, password: 'correct horse battery' };
  await page.evaluate(async (body) => {
    for (const path of ['/auth/register', '/auth/login', '/cart/items']) {
      const payload = path === '/cart/items' ? { productId: 3, quantity: 1 } : body;
      const res = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) });
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    }
  }, creds);
  return page;
}

/** The shopper's session as the shop page sees it: `/auth/sessions` status and the cart's lines. */
function sessionState(page: Page): Promise<{ sessions: number; cart: { productId: number; quantity: number }[] }> {
  return page.evaluate(async () => {
    const sessions = (await fetch('/auth/sessions')).status;
    const cart = (await (await fetch('/cart')).json()) as { items: { productId: number; quantity: number }[] };
    return { sessions, cart: cart.items.map((i) => ({ productId: i.productId, quantity: i.quantity })) };
  });
}

describe('the shop in Chromium: security', () => {
  test('markup injected into a page runs no script; the page\'s own script still works', async () => {
    const page = await browser.newPage();
    await recordViolations(page);
    // The Worker's response, headers (the CSP) and all, with markup slipped into it on the way.
    await page.route(`${app}/shop`, async (route) => {
      const response = await route.fetch();
      const injected = [
        '<script>window.inlineRan = true</script>',
        '<img src="/shop/nothing.png" onerror="window.attributeRan = true">',
        '<script src="/shop/app.js"></script>', // this origin's own script, but without the nonce
        '<link rel="stylesheet" href="/shop/app.css">',
      ].join('');
      await route.fulfill({ response, body: (await response.text()).replace('<main>', `<main>${injected}`) });
    });
    await page.goto(`${app}/shop`);
    // The nonce'd script ran (it fills the list) and ran once (a second copy would add 20 more items).
    await page.locator('#products li').nth(19).waitFor();
    await page.locator('#live[data-state=open]').waitFor();
    expect(await page.locator('#products li').count()).toBe(20);
    const ran = await page.evaluate(() => ({ inline: 'inlineRan' in window, attribute: 'attributeRan' in window }));
    expect(ran).toEqual({ inline: false, attribute: false });
    const violations = await page.evaluate(() => window.cspViolations);
    expect(violations).toEqual(expect.arrayContaining([
      'script-src-elem inline',
      'script-src-attr inline',
      `script-src-elem ${app}/shop/app.js`,
      `style-src-elem ${app}/shop/app.css`,
    ]));

    // Trusted Types: a string is not HTML. (Not `eval`: code that Playwright evaluates is exempt from
    // the page's eval rule, as the dev tools console is; test/functions/shop.security.test.ts checks
    // the policy has no 'unsafe-eval'.)
    const innerHTML = await page.evaluate(() => {
      try {
        document.querySelector('main')!.innerHTML = '<b>x</b>';
        return 'allowed';
      } catch (e) {
        return e instanceof Error ? e.name : String(e);
      }
    });
    expect(innerHTML).toBe('TypeError');
    await page.close();
  });

  test('a page of another origin cannot log the shopper out (form or no-cors fetch): 403, session and cart intact', async () => {
    const context = await browser.newContext();
    const shop = await signedIn(context);
    const before = await sessionState(shop);
    expect(before).toEqual({ sessions: 200, cart: [{ productId: 3, quantity: 1 }] });

    const other = await context.newPage();
    await other.goto(attackerUrl);
    // A no-cors fetch: the page cannot read the answer, the browser's network stack can.
    const fetched = other.waitForResponse(`${app}/auth/logout`);
    expect(await other.evaluate(() => window.fire())).toBe('sent');
    const fetchAnswer = await fetched;
    // 403, not 204: the guard refuses only requests that carry the session cookie (one without it
    // logs nobody out and passes), so the browser did send it along, as SameSite=Lax lets it on one site.
    expect(fetchAnswer.status()).toBe(403);

    // A form posted across origins: a navigation to the refusal.
    const posted = other.waitForResponse(`${app}/auth/logout`);
    await other.evaluate(() => (document.getElementById('f') as HTMLFormElement).submit());
    const formAnswer = await posted;
    expect(formAnswer.status(), await formAnswer.text()).toBe(403);
    expect(await formAnswer.text()).toContain('Cross-site request refused');

    expect(await sessionState(shop), 'still signed in, cart unchanged').toEqual(before);
    // The same request from the shop's own page does log out: the refusal above was the origin's.
    expect(await shop.evaluate(async () => (await fetch('/auth/logout', { method: 'POST' })).status)).toBe(204);
    expect((await sessionState(shop)).sessions).toBe(401);
    await context.close();
  });
});
