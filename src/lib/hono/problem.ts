/**
 * The one place a library failure gets its HTTP meaning: {@link edgeRedisProblem} maps every
 * `EdgeRedisError` to an RFC 9457 problem (status, stable `code`, a detail written for the client,
 * `Retry-After`), and {@link problemResponse} renders any problem as `application/problem+json`.
 * Redis's messages, keys and causes never reach the body: they stay on the error, for the log.
 *
 * @example
 * app.onError(onEdgeRedisError); // or, in your own onError: problemResponse(edgeRedisProblem(err), { instance })
 */
import type { Context, ErrorHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { EdgeRedisError, type EdgeRedisErrorCode, type EdgeRedisPattern } from '../errors.ts';

/** The problem codes a response may carry, with the status and title each one always has. */
export const PROBLEMS = {
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
} as const;

export type ProblemCode = keyof typeof PROBLEMS;

/** A problem to render: the code fixes status and title. */
export interface Problem {
  code: ProblemCode;
  /** Shown to the client: what was wrong and what to do. */
  detail?: string | undefined;
  /** Extra members (e.g. `errors`, `retryAfter`). */
  extensions?: Record<string, unknown> | undefined;
  /** Response headers (e.g. `Retry-After`). */
  headers?: Record<string, string> | undefined;
}

/** The problem+json body of `problem` (type URI `https://edge-redis.dev/problems/<code>`). */
export function problemBody({ code, detail, extensions = {} }: Problem, instance?: string) {
  const { status, title } = PROBLEMS[code];
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

/** `problem` as an `application/problem+json` response; `instance` is usually the request path. */
export function problemResponse(problem: Problem, instance?: string): Response {
  const body = problemBody(problem, instance);
  return new Response(JSON.stringify(body), { status: body.status, headers: { 'content-type': 'application/problem+json', ...problem.headers } });
}

/** What a client reads when a pattern's Redis is out of reach, and how long to wait (seconds). */
const UNAVAILABLE: Record<EdgeRedisPattern, { detail: string; retryAfterS: number }> = {
  redis: { detail: 'Redis is unavailable; try again shortly.', retryAfterS: 1 },
  cache: { detail: 'The cache could not be updated; try again shortly.', retryAfterS: 1 },
  ratelimit: { detail: 'Rate limiting is unavailable; try again shortly.', retryAfterS: 1 },
  session: { detail: 'Sessions are unavailable right now; try again shortly.', retryAfterS: 5 },
  lock: { detail: 'The lock service is unavailable; try again later.', retryAfterS: 1 },
  idempotency: { detail: 'Idempotency keys cannot be checked right now; retry with the same key shortly.', retryAfterS: 1 },
  leaderboard: { detail: 'The leaderboard is unavailable; try again shortly.', retryAfterS: 1 },
  pubsub: { detail: 'Live events are unavailable right now; try again shortly.', retryAfterS: 2 },
  'login-throttle': { detail: 'Logins cannot be checked right now; try again shortly.', retryAfterS: 1 },
  writebehind: { detail: 'The queue is unavailable; try again shortly.', retryAfterS: 5 },
};

const BY_CODE: Record<Exclude<EdgeRedisErrorCode, 'unavailable' | 'timeout'>, Problem> = {
  busy: { code: 'conflict', detail: 'The resource is busy; try again later.', headers: { 'retry-after': '1' } },
  lost: { code: 'conflict', detail: 'The lock on the resource was lost; the work was interrupted.' },
  conflict: { code: 'conflict', detail: 'The value changed under a concurrent write; try again.' },
  config: { code: 'internal', detail: 'Something went wrong on our side.' },
  invalid: { code: 'internal', detail: 'Something went wrong on our side.' },
  loader: { code: 'internal', detail: 'Something went wrong on our side.' },
  handler: { code: 'internal', detail: 'Something went wrong on our side.' },
};

/**
 * The HTTP meaning of a library error: Redis out of reach or too slow → 503 with the pattern's
 * words and Retry-After; a busy or lost lock and a lost compare-and-set → 409; a setting, a stored
 * value or the caller's own loader or handler → 500.
 */
export function edgeRedisProblem(err: EdgeRedisError): Problem {
  if (err.code === 'unavailable' || err.code === 'timeout') {
    const { detail, retryAfterS } = UNAVAILABLE[err.pattern];
    return { code: 'unavailable', detail, headers: { 'retry-after': String(retryAfterS) } };
  }
  return BY_CODE[err.code];
}

/** The cause chain by name and message, without the client's ", command was: […]" (keys, values). */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e instanceof Error && depth < 4; depth++) {
    parts.push(`${e.name}: ${e.message.replace(/,? command was: [\s\S]*$/, '')}`);
    e = e.cause;
  }
  return parts.join(' <- ');
}

const pathOf = (c: Context) => new URL(c.req.url).pathname;

/**
 * `app.onError` for apps without their own: an `EdgeRedisError` as its problem, Hono's
 * `HTTPException` with its status, anything else a 500; 5xx are logged (cause chain, no secrets).
 */
export const onEdgeRedisError: ErrorHandler = (err, c) => {
  const instance = pathOf(c);
  if (err instanceof EdgeRedisError) {
    const problem = edgeRedisProblem(err);
    if (PROBLEMS[problem.code].status >= 500) console.error(`[${err.pattern}] ${c.req.method} ${instance}: ${describeError(err)}`);
    return problemResponse(problem, instance);
  }
  if (err instanceof HTTPException) {
    const code = (Object.keys(PROBLEMS) as ProblemCode[]).find((k) => PROBLEMS[k].status === err.status) ?? (err.status >= 500 ? 'internal' : 'bad_request');
    return problemResponse({ code, detail: err.message || PROBLEMS[code].title }, instance);
  }
  console.error(`[internal] ${c.req.method} ${instance}: ${describeError(err)}`);
  return problemResponse({ code: 'internal', detail: 'Something went wrong on our side.' }, instance);
};
