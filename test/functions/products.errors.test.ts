/**
 * The product routes refusing bad input (400 naming every bad field), unknown things (404 JSON,
 * negative-cached), oversize bodies (413), orders in the way of a delete (409), and failing
 * dependencies: Redis down (reads fail open; a write that reached D1 answers 503 saying so) and
 * D1 down (503). Never a 500, never a stack.
 */
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { ADMIN, call, createProduct, expectProblem, fileEnv, type ProductBody } from './products.support.ts';

const e = fileEnv();

afterEach(() => {
  vi.restoreAllMocks();
});

type Issue = { in: string; field: string; message: string };
const fields = (body: Record<string, unknown>) => [...new Set((body['errors'] as Issue[]).map((i) => `${i.in}:${i.field}`))].sort();

describe('bad ids and queries: 400 naming the field', () => {
  it.each(['0', '-1', 'abc', '1.5', '01', '1e3', '99999999999999999999', '%20'])('GET /products/%s', async (id) => {
    const body = expectProblem(await call(`/products/${id}`, { env: e }), 400, 'bad_request');
    expect(fields(body)).toEqual(['param:id']);
  });

  it('the same for /views, PATCH and DELETE', async () => {
    expect(fields(expectProblem(await call('/products/x/views', { env: e }), 400, 'bad_request'))).toEqual(['param:id']);
    expect(fields(expectProblem(await call('/products/0', { env: e, method: 'PATCH', headers: ADMIN, body: { stock: 1 } }), 400, 'bad_request'))).toEqual(['param:id']);
    expect(fields(expectProblem(await call('/products/-2', { env: e, method: 'DELETE', headers: ADMIN }), 400, 'bad_request'))).toEqual(['param:id']);
  });

  it.each([
    ['category=gadgets', ['query:category']],
    ['page=0', ['query:page']],
    ['page=abc', ['query:page']],
    ['pageSize=0', ['query:pageSize']],
    ['pageSize=101', ['query:pageSize']],
    ['page=1&page=2', ['query:page']],
    ['category=toys&category=home&pageSize=-5', ['query:category', 'query:pageSize']],
  ])('GET /products?%s', async (qs, expected) => {
    const body = expectProblem(await call(`/products?${qs}`, { env: e }), 400, 'bad_request');
    expect(fields(body)).toEqual(expected);
  });
});

describe('bad bodies: 400 naming every bad field', () => {
  const good = { name: 'A thing', category: 'toys', price: 1.5, stock: 1 };
  it.each([
    [{}, ['json:category', 'json:name', 'json:price', 'json:stock']],
    [{ ...good, name: '' }, ['json:name']],
    [{ ...good, name: '   ' }, ['json:name']],
    [{ ...good, name: 'x'.repeat(201) }, ['json:name']],
    [{ ...good, category: 'gadgets' }, ['json:category']],
    [{ ...good, price: -0.01 }, ['json:price']],
    [{ ...good, price: 1.234 }, ['json:price']],
    [{ ...good, price: '1.50' }, ['json:price']],
    [{ ...good, stock: 1.5 }, ['json:stock']],
    [{ ...good, stock: -1 }, ['json:stock']],
    [{ ...good, id: 5 }, ['json:(root)']],
    [{ name: 7, category: null, price: 1e12, stock: 'many' }, ['json:category', 'json:name', 'json:price', 'json:stock']],
  ])('POST /products %j', async (body, expected) => {
    const r = expectProblem(await call('/products', { env: e, method: 'POST', headers: ADMIN, body }), 400, 'bad_request');
    expect(fields(r)).toEqual(expected);
  });

  it('accepts prices with up to 2 decimals, 0, and the bounds of name', async () => {
    for (const price of [0, 0.1, 19.99, 1234567.89]) await createProduct(e, { price });
    await createProduct(e, { name: 'x'.repeat(200), stock: 0 });
    await createProduct(e, { name: 'y' });
  });

  it('PATCH: an empty body, a bad field, or an unknown one', async () => {
    const p = await createProduct(e);
    expect(fields(expectProblem(await call(`/products/${p.id}`, { env: e, method: 'PATCH', headers: ADMIN, body: {} }), 400, 'bad_request'))).toEqual(['json:(root)']);
    expect(fields(expectProblem(await call(`/products/${p.id}`, { env: e, method: 'PATCH', headers: ADMIN, body: { price: 0.001 } }), 400, 'bad_request'))).toEqual(['json:price']);
    expect(fields(expectProblem(await call(`/products/${p.id}`, { env: e, method: 'PATCH', headers: ADMIN, body: { fence: 9 } }), 400, 'bad_request'))).toEqual(['json:(root)']);
    expect((await call(`/products/${p.id}`, { env: e })).body).toEqual(p);
  });

  it('malformed JSON and a non-JSON content type are 400', async () => {
    expectProblem(await call('/products', { env: e, method: 'POST', headers: ADMIN, body: '{"name": "x",' }), 400, 'bad_request');
    const r = expectProblem(await call('/products', { env: e, method: 'POST', headers: { ...ADMIN, 'content-type': 'text/plain' }, body: 'name=x' }), 400, 'bad_request');
    expect(fields(r)).toContain('json:name');
  });

  it('a body over 64 KB is 413, with or without Content-Length', async () => {
    const big = { name: 'x', category: 'toys', price: 1, stock: 1, pad: 'x'.repeat(65 * 1024) };
    expectProblem(await call('/products', { env: e, method: 'POST', headers: ADMIN, body: big }), 413, 'payload_too_large');
    const res = await call('/products', { env: e, method: 'POST', headers: ADMIN, body: new Blob([JSON.stringify(big)]).stream() });
    expectProblem(res, 413, 'payload_too_large');
  });
});

describe('not found', () => {
  it('an unknown product is 404 problem+json, cached briefly as absent', async () => {
    const id = 900_000_000 + Math.floor(Math.random() * 1_000_000);
    const first = await call(`/products/${id}`, { env: e });
    expectProblem(first, 404, 'not_found');
    expect(first.res.headers.get('x-cache')).toBe('MISS');
    // Written to D1 behind the API's back: the absence stays cached (30 s) and D1 is not asked.
    await env.DB.prepare("INSERT INTO products (id, name, category, price_cents, stock, created_at, updated_at) VALUES (?1, 'Sneaky', 'toys', 1, 1, 0, 0)").bind(id).run();
    const again = await call(`/products/${id}`, { env: e });
    expectProblem(again, 404, 'not_found');
    expect(again.res.headers.get('x-cache')).toBe('HIT');
  });

  it('PATCH, DELETE and /views of an unknown product are 404', async () => {
    expectProblem(await call('/products/987654321', { env: e, method: 'PATCH', headers: ADMIN, body: { stock: 1 } }), 404, 'not_found');
    expectProblem(await call('/products/987654321', { env: e, method: 'DELETE', headers: ADMIN }), 404, 'not_found');
    expectProblem(await call('/products/987654321/views', { env: e }), 404, 'not_found');
  });

  it('unknown routes under /products are 404 JSON', async () => {
    for (const [method, path] of [['GET', '/products/1/nope'], ['PUT', '/products/1'], ['POST', '/products/1'], ['GET', '/products/1/views/2']] as const) {
      const body = expectProblem(await call(path, { env: e, method, headers: ADMIN }), 404, 'not_found');
      expect(body['instance']).toBe(path);
    }
  });
});

describe('DELETE of a product that was ordered', () => {
  it('is refused with 409 and the product stays', async () => {
    const p = await createProduct(e);
    const order = crypto.randomUUID();
    await env.DB.batch([
      env.DB.prepare('INSERT INTO orders (id, idempotency_key, total_cents, created_at) VALUES (?1, ?1, 1250, 0)').bind(order),
      env.DB.prepare('INSERT INTO order_items (order_id, product_id, quantity, price_cents) VALUES (?1, ?2, 1, 1250)').bind(order, p.id),
    ]);
    const body = expectProblem(await call(`/products/${p.id}`, { env: e, method: 'DELETE', headers: ADMIN }), 409, 'conflict');
    expect(body['detail']).toMatch(/orders/);
    expect((await call(`/products/${p.id}`, { env: e })).body).toEqual(p);
  });
});

describe('Redis down', () => {
  const down = { ...e, UPSTASH_REDIS_REST_URL: inject('downGatewayUrl') } as Env;

  it('reads fail open: the product comes from D1 (MISS), the rate limit says it is unavailable', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const r = await call('/products/2', { env: down });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toMatchObject({ id: 2, name: 'Rugged Novel 2' });
    expect(r.res.headers.get('x-cache')).toBe('MISS');
    expect(r.res.headers.get('ratelimit-status')).toBe('unavailable');
    const list = await call('/products?category=home', { env: down });
    expect(list.status, list.text).toBe(200);
    // The view could not be counted: logged without keys or tokens, never thrown.
    const logged = warn.mock.calls.map((c) => c.join(' ')).join('\n');
    expect(logged).toContain('[views] a view was not counted');
    expect(logged).not.toContain(env.UPSTASH_REDIS_REST_TOKEN);
  });

  it('a write that reached D1 answers 503 saying it is stored (never 500), and logs it', async () => {
    const error = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const r = await call('/products', { env: down, method: 'POST', headers: ADMIN, body: { name: 'Stored anyway', category: 'home', price: 3, stock: 4 } });
    const body = expectProblem(r, 503, 'unavailable');
    expect(body['detail']).toMatch(/stored/);
    expect(body).toMatchObject({ stored: true, id: expect.any(Number) });
    const id = body['id'] as number;
    expect(await env.DB.prepare('SELECT name FROM products WHERE id = ?').bind(id).first('name')).toBe('Stored anyway');
    expect(error.mock.calls.map((c) => c.join(' ')).join('\n')).toMatch(/\[unavailable\] POST \/products/);

    const patched = expectProblem(await call(`/products/${id}`, { env: down, method: 'PATCH', headers: ADMIN, body: { stock: 9 } }), 503, 'unavailable');
    expect(patched).toMatchObject({ stored: true, id });
    expect(await env.DB.prepare('SELECT stock FROM products WHERE id = ?').bind(id).first('stock')).toBe(9);
  });

  it('views cannot be exact without Redis: 503', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    expectProblem(await call('/products/2/views', { env: down }), 503, 'unavailable');
  });
});

describe('D1 down', () => {
  it('a product that must be loaded answers 503, not 500', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    // D1 answering every query with an error, as during an outage (not Redis: that one is real).
    const fail = () => Promise.reject(new Error('D1_ERROR: Network connection lost.'));
    const statement = { bind: () => statement, first: fail, all: fail, run: fail, raw: fail };
    const broken = { prepare: () => statement, batch: fail };
    const noDb = { ...e, DB: broken as unknown as D1Database } as Env;
    const p: ProductBody = await createProduct(e);
    // A cached product is still served: Redis is in front.
    await call(`/products/${p.id}`, { env: e });
    const cached = await call(`/products/${p.id}`, { env: noDb });
    expect(cached.status, cached.text).toBe(200);
    expectProblem(await call('/products/987654', { env: noDb }), 503, 'unavailable');
    expectProblem(await call('/products?page=999', { env: noDb }), 503, 'unavailable');
    expectProblem(await call('/products', { env: noDb, method: 'POST', headers: ADMIN, body: { name: 'n', category: 'toys', price: 1, stock: 1 } }), 503, 'unavailable');
  });
});
