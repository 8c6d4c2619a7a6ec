/**
 * The app's HTTP errors: `AppError` with a closed set of codes, and one `app.onError` that renders
 * every error as RFC 9457 `application/problem+json` with a stable `code`. The rendering and the
 * HTTP meaning of the library's own errors come from `edge-redis/hono` (`problemResponse`,
 * `edgeRedisProblem`), so a 503 from a lock and one from a route look the same. Stack traces, Redis
 * messages and causes stay in the server log; the client sees only the title and the detail.
 *
 * @example
 * app.onError(onError);
 * app.notFound(notFound);
 * throw new AppError('conflict', { detail: 'not enough stock for product 7' });
 */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { describeError, onEdgeRedisError, PROBLEMS, problemResponse, type ProblemCode } from 'edge-redis/hono';

export type ErrorCode = ProblemCode;

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
    const { status, title } = PROBLEMS[code];
    super(status, { message: options.detail ?? title, cause: options.cause });
    this.code = code;
    this.detail = options.detail;
    this.extensions = options.extensions ?? {};
    this.headers = options.headers ?? {};
  }
}

/** `app.onError`: every error becomes problem+json; unknown ones are logged and answer 500. */
export function onError(err: Error, c: Context): Response | Promise<Response> {
  if (!(err instanceof AppError)) return onEdgeRedisError(err, c);
  const instance = new URL(c.req.url).pathname;
  if (err.status >= 500) console.error(`[${err.code}] ${c.req.method} ${instance}: ${describeError(err)}`);
  return problemResponse({ code: err.code, detail: err.detail, headers: err.headers, extensions: err.extensions }, instance);
}

/** `app.notFound`: 404 problem+json. */
export function notFound(c: Context): Response {
  const instance = new URL(c.req.url).pathname;
  return problemResponse({ code: 'not_found', detail: `No route for ${c.req.method} ${instance}` }, instance);
}
