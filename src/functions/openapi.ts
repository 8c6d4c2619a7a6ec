/**
 * Route schemas, used twice: to validate requests (400 problem+json naming every bad field) and to
 * document them in `GET /openapi.json`, through `hono-openapi` (https://github.com/rhinobase/hono-openapi).
 * A route puts {@link doc} (summary, tags, responses) and one {@link validate} per input in front of
 * its handler; `c.req.valid(...)` is typed from the same zod schema the document shows, and the
 * document is generated from the app's own routes ({@link openApiDocument}), so an undocumented or
 * renamed route cannot drift from it.
 *
 * Weighed (npm view, 2026-12): `@hono/zod-openapi` 1.6 (peer zod ^4, hono >=4.10) and `hono-openapi`
 * 1.3 (peer hono ^4.11.2; zod 4 through Standard Schema, converted by zod's own `z.toJSONSchema`).
 * Both support zod 4.6 and hono 4.13. Chosen: `hono-openapi`, because its validators are plain
 * middleware over hono's own validator, so the behaviour the tests pin stays: a body sent with a
 * non-JSON content type is validated as `{}` and answers 400 naming the fields (zod-openapi puts a
 * 415 media-type gate in front), route middleware keeps its place (the admin check before
 * validation, the login's session preload after it; zod-openapi runs route middleware before all
 * validators), and the sub-apps stay plain `Hono` apps. `@hono/zod-openapi` has the stronger
 * typing of responses, which this app does not use.
 *
 * @example
 * const IdParams = z.object({ id: z.coerce.number().int().min(1) });
 * products.get('/:id', doc({ summary: 'One product', tags: ['products'], responses: { 200: { description: 'The product', body: Product } } }),
 *   validate('param', IdParams), (c) => c.json(c.req.valid('param')));
 */
import type { Handler, Hono, MiddlewareHandler, ValidationTargets } from 'hono';
import { describeRoute, generateSpecs, resolver, validator } from 'hono-openapi';
import { z } from 'zod';
import type { AppEnv } from '../env.ts';
import { AppError } from '../errors.ts';

type Target = 'param' | 'query' | 'json' | 'header';

/** An issue list a client can act on: where, which field, what is wrong. */
function issues(target: Target, list: readonly { message: string; path?: readonly (PropertyKey | { key: PropertyKey })[] | undefined }[]) {
  return list.map((i) => ({
    in: target,
    field: (i.path ?? []).map((p) => String(typeof p === 'object' ? p.key : p)).join('.') || '(root)',
    message: i.message,
  }));
}

/** A validator for one target, documented as its parameters or body; a failure is a 400 problem+json listing every bad field. */
export function validate<T extends Target, S extends z.ZodType>(target: T, schema: S) {
  return validator<S, T, AppEnv, string>(target, schema, (result) => {
    if (result.success) return;
    const list = issues(target, result.error);
    throw new AppError('bad_request', {
      detail: `Invalid ${target === 'json' ? 'body' : target}: ${list.map((i) => `${i.field} (${i.message})`).join('; ')}`,
      extensions: { errors: list },
    });
  }) as MiddlewareHandler<
    AppEnv,
    string,
    { in: { [K in T]: z.input<S> } & Partial<ValidationTargets>; out: { [K in T]: z.output<S> } }
  >;
}

/** RFC 9457 problem details, as src/errors.ts renders them. */
const Problem = z
  .object({
    type: z.string(), title: z.string(), status: z.number().int(), code: z.string(),
    detail: z.string().optional(), instance: z.string().optional(),
    errors: z.array(z.object({ in: z.string(), field: z.string(), message: z.string() })).optional().describe('400: every bad field'),
  })
  .describe('RFC 9457 problem details');

export interface RouteDoc {
  summary: string;
  description?: string;
  tags: string[];
  /** `admin` (Bearer ADMIN_TOKEN) or `session` (the session cookie). */
  security?: 'admin' | 'session';
  /** A 4xx/5xx without `contentType` is problem+json. */
  responses: Record<number, { description: string; body?: z.ZodType; contentType?: string }>;
  /**
   * Add the 400, 429 and 503 problem+json answers every route behind the app's middleware can give
   * (invalid input, the per-IP limit, Redis out of reach). `false` for a route mounted before it.
   * @default true
   */
  commonErrors?: boolean;
}

const COMMON_ERRORS: Record<number, string> = { 400: 'Invalid input', 429: 'Rate limited', 503: 'A dependency is unavailable' };

/** The documentation of one route (its inputs are documented by its {@link validate} middleware). */
export function doc(spec: RouteDoc): MiddlewareHandler<AppEnv> {
  const responses: Record<string, { description: string; content?: Record<string, { schema: ReturnType<typeof resolver> }> }> = {};
  const all: RouteDoc['responses'] = { ...spec.responses };
  if (spec.commonErrors ?? true) for (const [status, description] of Object.entries(COMMON_ERRORS)) all[Number(status)] ??= { description };
  for (const [status, res] of Object.entries(all)) {
    const problem = Number(status) >= 400;
    const schema = res.body ?? (problem ? Problem : undefined);
    const contentType = res.contentType ?? (problem ? 'application/problem+json' : 'application/json');
    responses[status] = { description: res.description, ...(schema ? { content: { [contentType]: { schema: resolver(schema, { io: 'output' }) } } } : {}) };
  }
  return describeRoute({
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: spec.tags,
    ...(spec.security === 'admin' ? { security: [{ adminToken: [] }] } : spec.security === 'session' ? { security: [{ sessionCookie: [] }] } : {}),
    responses,
  });
}

export interface DocInfo {
  title: string;
  version: string;
  description: string;
}

/** The OpenAPI 3.1 document of every documented route of `app`. */
export function openApiDocument(app: Hono<AppEnv>, info: DocInfo) {
  return generateSpecs(app, {
    documentation: {
      openapi: '3.1.0',
      info,
      // The order the docs page shows them in (otherwise: the order routes were mounted).
      tags: [
        { name: 'products', description: 'The catalogue: D1, cached in Redis' },
        { name: 'cart', description: 'The session cart' },
        { name: 'checkout', description: 'Orders: stock reserved in Redis, written to D1' },
        { name: 'auth', description: 'Accounts and sessions' },
        { name: 'leaderboard', description: 'Best sellers' },
        { name: 'events', description: 'Server-Sent Events' },
        { name: 'operations', description: 'For monitors' },
        { name: 'docs', description: 'This description' },
      ],
      components: {
        securitySchemes: {
          adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN' },
          sessionCookie: { type: 'apiKey', in: 'cookie', name: '__Host-sid', description: '`sid` when APP_ENV is development (plain http)' },
        },
      },
    },
    // doc() adds the problem+json 400 to every route, validated or not.
    defaultValidationErrorResponse: false,
    // Only routes with doc() are listed anyway; by default a path like /openapi.json would be dropped as a file.
    excludeStaticFile: false,
  });
}

/**
 * `GET /openapi.json` of `app`: built once per isolate, on the first request (every route is
 * registered by then); a failed build is not kept, the next request tries again.
 */
export function openApiRoute(app: Hono<AppEnv>, info: DocInfo): Handler<AppEnv> {
  let built: ReturnType<typeof openApiDocument> | undefined;
  return async (c) => {
    built ??= openApiDocument(app, info).catch((cause: unknown) => {
      built = undefined;
      throw new AppError('internal', { detail: 'The API description could not be built.', cause });
    });
    return c.json(await built);
  };
}
