/**
 * One error type for the whole app and one renderer: every error leaves as RFC 9457
 * `application/problem+json` with a stable `code`. Stack traces, Redis messages and causes stay in
 * the server log; the client sees only the title and the detail written for it.
 *
 * @example
 * app.onError(onError);
 * app.notFound(notFound);
 * throw new AppError('conflict', { detail: 'not enough stock for product 7' });
 */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

/** The closed set of error codes, with the status and title each one always has. */
export const ERROR_CODES = {
  bad_request: { status: 400, title: 'Bad request' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  forbidden: { status: 403, title: 'Forbidden' },
  not_found: { status: 404, title: 'Not found' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  conflict: { status: 409, title: 'Conflict' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  unprocessable: { status: 422, title: 'Unprocessable content' },
  rate_limited: { status: 429, title: 'Too many requests' },
  internal: { status: 500, title: 'Internal server error' },
  unavailable: { status: 503, title: 'Service unavailable' },
} as const satisfies Record<string, { status: ContentfulStatusCode; title: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface AppErrorOptions {
  /** Shown to the client: say what was wrong and what to do. */
  detail?: string;
  /** Extra problem members (e.g. `errors` for validation, `retryAfter`). */
  extensions?: Record<string, unknown>;
  /** Response headers to add (e.g. `Retry-After`). */
  headers?: Record<string, string>;
  /** The underlying failure; logged, never sent. */
  cause?: unknown;
}

export class AppError extends HTTPException {
  override name = 'AppError';
  readonly code: ErrorCode;
  readonly detail: string | undefined;
  readonly extensions: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, options: AppErrorOptions = {}) {
    const { status, title } = ERROR_CODES[code];
    super(status, { message: options.detail ?? title, cause: options.cause });
    this.code = code;
    this.detail = options.detail;
    this.extensions = options.extensions ?? {};
    this.headers = options.headers ?? {};
  }
}

/** The problem+json body for a code. */
export function problem(code: ErrorCode, detail?: string, extensions: Record<string, unknown> = {}, instance?: string) {
  const { status, title } = ERROR_CODES[code];
  return {
    type: `https://edge-redis.dev/problems/${code.replace(/_/g, '-')}`,
    title,
    status,
    code,
    ...(detail !== undefined ? { detail } : {}),
    ...(instance !== undefined ? { instance } : {}),
    ...extensions,
  };
}

export function problemResponse(code: ErrorCode, options: Omit<AppErrorOptions, 'cause'> & { instance?: string } = {}): Response {
  const body = problem(code, options.detail, options.extensions, options.instance);
  return new Response(JSON.stringify(body), {
    status: body.status,
    headers: { 'content-type': 'application/problem+json', ...options.headers },
  });
}

function causeChain(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e instanceof Error && depth < 4; depth++) {
    // @upstash/redis appends ", command was: [...]" with the arguments (keys, values): not for logs.
    parts.push(`${e.name}: ${e.message.replace(/,? command was: [\s\S]*$/, '')}`);
    e = e.cause;
  }
  return parts.join(' <- ');
}

/** `app.onError`: every error becomes problem+json; unknown ones are logged and answer 500. */
export function onError(err: Error, c: Context): Response {
  const instance = new URL(c.req.url).pathname;
  if (err instanceof AppError) {
    if (err.status >= 500) console.error(`[${err.code}] ${c.req.method} ${instance}: ${causeChain(err)}`);
    return problemResponse(err.code, { instance, headers: err.headers, extensions: err.extensions, ...(err.detail !== undefined ? { detail: err.detail } : {}) });
  }
  if (err instanceof HTTPException) {
    // Hono's own middleware (bodyLimit, validator, …) throws these.
    const code = (Object.keys(ERROR_CODES) as ErrorCode[]).find((k) => ERROR_CODES[k].status === err.status) ?? (err.status >= 500 ? 'internal' : 'bad_request');
    return problemResponse(code, { instance, detail: err.message || ERROR_CODES[code].title });
  }
  console.error(`[internal] ${c.req.method} ${instance}: ${causeChain(err)}`);
  return problemResponse('internal', { instance, detail: 'Something went wrong on our side.' });
}

/** `app.notFound`: 404 problem+json. */
export function notFound(c: Context): Response {
  const instance = new URL(c.req.url).pathname;
  return problemResponse('not_found', { instance, detail: `No route for ${c.req.method} ${instance}` });
}
