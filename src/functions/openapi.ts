/**
 * Route schemas, used twice: to validate requests (400 problem+json naming every bad field) and to
 * generate `GET /openapi.json`. A route declares its schemas once with {@link route}; the returned
 * validators go in front of its handler, so `c.req.valid(...)` is typed from the same schema.
 *
 * @example
 * const IdParams = z.object({ id: z.coerce.number().int().min(1) });
 * route({ method: 'get', path: '/products/{id}', summary: 'One product', tags: ['products'],
 *   params: IdParams, responses: { 200: { description: 'The product', body: Product } } });
 * products.get('/:id', validate('param', IdParams), (c) => c.json(c.req.valid('param')));
 */
import type { MiddlewareHandler, ValidationTargets } from 'hono';
import { validator } from 'hono/validator';
import { z } from 'zod';
import type { AppEnv } from '../env.ts';
import { AppError } from '../errors.ts';

type Target = 'param' | 'query' | 'json' | 'header';

export interface RouteSpec<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType, H extends z.ZodType> {
  method: 'get' | 'post' | 'patch' | 'put' | 'delete';
  /** OpenAPI form: `/products/{id}`. */
  path: string;
  summary: string;
  description?: string;
  tags: string[];
  params?: P;
  query?: Q;
  body?: B;
  headers?: H;
  /** `admin` (Bearer ADMIN_TOKEN) or `session` (the session cookie). */
  security?: 'admin' | 'session';
  responses: Record<number, { description: string; body?: z.ZodType; contentType?: string }>;
}

const registry: RouteSpec<z.ZodType, z.ZodType, z.ZodType, z.ZodType>[] = [];

/** An issue list a client can act on: where, which field, what is wrong. */
function issues(target: Target, error: z.ZodError) {
  return error.issues.map((i) => ({ in: target, field: i.path.map(String).join('.') || '(root)', message: i.message }));
}

/** A validator for one target; a failure is a 400 problem+json listing every bad field. */
export function validate<T extends Target, S extends z.ZodType>(target: T, schema: S) {
  return validator(target, async (value: unknown) => {
    const r = await schema.safeParseAsync(value);
    if (!r.success) {
      const list = issues(target, r.error);
      throw new AppError('bad_request', {
        detail: `Invalid ${target === 'json' ? 'body' : target}: ${list.map((i) => `${i.field} (${i.message})`).join('; ')}`,
        extensions: { errors: list },
      });
    }
    return r.data as z.output<S>;
  }) as MiddlewareHandler<
    AppEnv,
    string,
    { in: { [K in T]: z.input<S> } & Partial<ValidationTargets>; out: { [K in T]: z.output<S> } }
  >;
}

/** Registers a route's documentation and hands back its validators. */
export function route<P extends z.ZodType = z.ZodNever, Q extends z.ZodType = z.ZodNever, B extends z.ZodType = z.ZodNever, H extends z.ZodType = z.ZodNever>(
  spec: RouteSpec<P, Q, B, H>,
) {
  registry.push(spec as unknown as RouteSpec<z.ZodType, z.ZodType, z.ZodType, z.ZodType>);
  return spec;
}

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  return z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
}

function parameters(where: 'path' | 'query' | 'header', schema: z.ZodType | undefined) {
  if (!schema) return [];
  const s = jsonSchema(schema, 'input') as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
  return Object.entries(s.properties ?? {}).map(([name, prop]) => ({
    name,
    in: where,
    required: where === 'path' || (s.required ?? []).includes(name),
    schema: prop,
    ...(typeof prop['description'] === 'string' ? { description: prop['description'] } : {}),
  }));
}

const Problem = {
  type: 'object',
  description: 'RFC 9457 problem details',
  properties: {
    type: { type: 'string' }, title: { type: 'string' }, status: { type: 'integer' }, code: { type: 'string' },
    detail: { type: 'string' }, instance: { type: 'string' },
    errors: { type: 'array', items: { type: 'object', properties: { in: { type: 'string' }, field: { type: 'string' }, message: { type: 'string' } } } },
  },
  required: ['type', 'title', 'status', 'code'],
};

/** The OpenAPI 3.1 document of every registered route. */
export function openApiDocument(info: { title: string; version: string; description?: string }) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of registry) {
    const responses: Record<string, unknown> = {};
    for (const [status, res] of Object.entries(r.responses)) {
      const type = res.contentType ?? (Number(status) >= 400 ? 'application/problem+json' : 'application/json');
      responses[status] = { description: res.description, ...(res.body ? { content: { [type]: { schema: jsonSchema(res.body, 'output') } } } : {}) };
    }
    for (const status of ['400', '429', '503']) {
      responses[status] ??= { description: { '400': 'Invalid input', '429': 'Rate limited', '503': 'A dependency is unavailable' }[status], content: { 'application/problem+json': { schema: Problem } } };
    }
    (paths[r.path] ??= {})[r.method] = {
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      tags: r.tags,
      parameters: [...parameters('path', r.params), ...parameters('query', r.query), ...parameters('header', r.headers)],
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(r.body, 'input') } } } } : {}),
      ...(r.security === 'admin' ? { security: [{ adminToken: [] }] } : r.security === 'session' ? { security: [{ sessionCookie: [] }] } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info,
    paths,
    components: {
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN' },
        sessionCookie: { type: 'apiKey', in: 'cookie', name: 'sid' },
      },
      schemas: { Problem },
    },
  };
}

/** A docs page rendering /openapi.json (Scalar, loaded from its CDN by the browser). */
export function docsPage(specUrl: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge-redis API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><script id="api-reference" data-url="${specUrl}"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
<noscript>The API description is at <a href="${specUrl}">${specUrl}</a>.</noscript></body></html>`;
}
