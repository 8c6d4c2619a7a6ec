/**
 * `GET /openapi.json`: valid OpenAPI 3.1, checked by `@readme/openapi-parser` (its AJV validation
 * against the official 3.1 schema plus its own rules: unique operationIds, path parameters declared
 * and required, …). It is ReadMe's maintained fork of `@apidevtools/swagger-parser`, validates 3.1
 * (not only 3.0), and runs here in workerd as it is, on the document exactly as the Worker serves
 * it, so no Node step is needed. Every route of the app is in it, and it is built once per isolate.
 */
import { env } from 'cloudflare:workers';
import { compileErrors, validate } from '@readme/openapi-parser';
import { Hono } from 'hono';
import { TrieRouter } from 'hono/router/trie-router';
import type { OpenAPIV3_1 } from 'openapi-types';
import { describe, expect, it } from 'vitest';
import type { AppEnv } from '../../src/env.ts';
import { SCALAR_ASSET } from '../../src/functions/docs.ts';
import { doc, openApiRoute } from '../../src/functions/openapi.ts';
import { app } from '../../src/index.ts';
import { freshIp } from './products.support.ts';
import { callWorker } from '../support/worker.ts';

/** Every operation the API offers, as `METHOD /path` in OpenAPI's path syntax. */
const OPERATIONS = [
  'GET /healthz',
  'GET /openapi.json',
  'POST /checkout',
  'GET /leaderboard/best-sellers',
  'GET /events/inventory',
  'GET /products',
  'POST /products',
  'GET /products/{id}',
  'PATCH /products/{id}',
  'DELETE /products/{id}',
  'GET /products/{id}/views',
  'POST /auth/register',
  'POST /auth/login',
  'POST /auth/logout',
  'GET /auth/sessions',
  'DELETE /auth/sessions/{id}',
  'POST /auth/logout-all',
  'GET /cart',
  'POST /cart/items',
  'PATCH /cart/items/{productId}',
  'DELETE /cart/items/{productId}',
];

/**
 * Routes that are not API operations: the docs page and its script, the shop's pages for people
 * and their assets (src/functions/shop.ts), the browser's favicon.
 */
const NOT_OPERATIONS = [
  'GET /docs',
  `GET /docs${SCALAR_ASSET}`,
  'GET /shop',
  'GET /shop/products/{id}{[1-9][0-9]{0,14}}',
  'GET /shop/cart',
  'GET /shop/app.js',
  'GET /shop/app.css',
  'GET /favicon.ico',
];

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

async function fetchDocument(): Promise<OpenAPIV3_1.Document> {
  const r = await callWorker(env, '/openapi.json', { ip: freshIp() });
  expect(r.status, r.text).toBe(200);
  expect(r.res.headers.get('content-type')).toMatch(/^application\/json/);
  return r.body as OpenAPIV3_1.Document;
}

function operationsOf(document: OpenAPIV3_1.Document): string[] {
  return Object.entries(document.paths ?? {}).flatMap(([path, item]) =>
    METHODS.filter((m) => item?.[m] !== undefined).map((m) => `${m.toUpperCase()} ${path}`),
  );
}

describe('/openapi.json', () => {
  it('is valid OpenAPI 3.1', async () => {
    const document = await fetchDocument();
    expect(document.openapi).toBe('3.1.0');
    // validate() dereferences in place: give it a copy.
    const result = await validate(structuredClone(document));
    expect(result.valid, result.valid ? '' : compileErrors(result)).toBe(true);
    expect(result.specification).toBe('OpenAPI');
    expect(result.warnings).toEqual([]);
  });

  it('the validator is not a rubber stamp: a broken copy is refused', async () => {
    const broken = structuredClone(await fetchDocument());
    // An operation must have responses, and a path parameter must be declared.
    const products = broken.paths?.['/products/{id}'];
    if (products?.get === undefined) throw new Error('GET /products/{id} is missing');
    products.get.parameters = [];
    const result = await validate(broken);
    expect(result.valid).toBe(false);
  });

  it('lists exactly the operations of the API', async () => {
    expect(operationsOf(await fetchDocument()).sort()).toEqual([...OPERATIONS].sort());
  });

  it('documents every route the app has', async () => {
    const documented = new Set(operationsOf(await fetchDocument()));
    const routes = [...new Set(app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`))];
    expect(routes.length).toBeGreaterThanOrEqual(OPERATIONS.length);
    const undocumented = routes.filter((r) => !documented.has(r) && !NOT_OPERATIONS.includes(r));
    expect(undocumented).toEqual([]);
  });

  it('every operation has a summary, a tag, and its error answers as problem+json', async () => {
    const document = await fetchDocument();
    for (const item of Object.values(document.paths ?? {})) {
      for (const m of METHODS) {
        const op = item?.[m];
        if (op === undefined) continue;
        expect(op.summary, m).toBeTruthy();
        expect(op.tags?.length, op.summary).toBeGreaterThan(0);
        for (const [status, res] of Object.entries(op.responses ?? {})) {
          if (Number(status) < 400 || !('content' in res) || res.content === undefined) continue;
          expect(Object.keys(res.content), `${op.summary} ${status}`).toEqual([expect.stringMatching(/^application\/(problem\+)?json$/)]);
        }
      }
    }
  });

  it('declares every tag its operations use, once', async () => {
    const document = await fetchDocument();
    const declared = (document.tags ?? []).map((t) => t.name);
    const used = new Set(Object.values(document.paths ?? {}).flatMap((item) => METHODS.flatMap((m) => item?.[m]?.tags ?? [])));
    expect(new Set(declared).size).toBe(declared.length);
    expect([...used].sort()).toEqual([...declared].sort());
  });

  it('is built once per isolate: routes added after the first request do not change it', async () => {
    // A router that takes routes after the first request (the app's default one refuses them).
    const mini = new Hono<AppEnv>({ router: new TrieRouter() });
    mini.get('/openapi.json', openApiRoute(mini, { title: 't', version: '1', description: 'd' }));
    mini.get('/a', doc({ summary: 'A', tags: ['t'], responses: { 200: { description: 'ok' } } }), (c) => c.text('a'));
    const first = (await (await mini.request('/openapi.json')).json()) as OpenAPIV3_1.Document;
    expect(Object.keys(first.paths ?? {})).toEqual(['/a']);
    mini.get('/b', doc({ summary: 'B', tags: ['t'], responses: { 200: { description: 'ok' } } }), (c) => c.text('b'));
    const second = (await (await mini.request('/openapi.json')).json()) as OpenAPIV3_1.Document;
    expect(second).toEqual(first);
  });
});
