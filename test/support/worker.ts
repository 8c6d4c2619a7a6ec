/**
 * Calling the Worker from a workerd test: the one way the per-resource support files hand a request
 * to `worker.fetch` and read what comes back. Each of them keeps its own `call` shape (which env,
 * how the body is encoded, what a test gets back); only the part they all shared lives here.
 */
import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test';
import worker from '../../src/index.ts';

/** The origin every test request is addressed to; the Worker does not look at the host. */
export const ORIGIN = 'http://shop.test';

/**
 * Hands one request for `path` to the Worker's fetch handler with `ctx` and answers its response
 * as the Worker made it (streams are not read, `waitUntil` work is not awaited).
 */
export async function fetchWorker(env: Env, path: string, init: RequestInit, ctx: ExecutionContext = createExecutionContext()): Promise<Response> {
  return worker.fetch(new Request(`${ORIGIN}${path}`, init), env, ctx);
}

export interface WorkerCall {
  /** @default 'GET' */
  method?: string;
  /** Sent as is (the caller encodes it). */
  body?: BodyInit | undefined;
  /** CF-Connecting-IP: every test passes its own so a per-IP limit of one never touches another. */
  ip: string;
  /** The `sid` cookie to send; it replaces any `cookie` in `headers`. */
  sid?: string | undefined;
  headers?: Record<string, string>;
  /** Content-Type to send with a body when `headers` has no lower-case `content-type`. */
  defaultContentType?: string;
  /**
   * Read the body before awaiting the request's `waitUntil` work rather than after.
   * @default false
   */
  readBeforeWait?: boolean;
}

export interface WorkerAnswer {
  res: Response;
  status: number;
  text: string;
  /** Parsed body, or undefined when it is not JSON. */
  body: unknown;
}

/**
 * One request to the Worker on `env`; resolves once its `waitUntil` work is done too, with the
 * body read as text and parsed when it is JSON.
 * @example const { status, body } = await callWorker(env, '/products/1', { ip: '198.18.0.1' });
 */
export async function callWorker(env: Env, path: string, { method = 'GET', body, ip, sid, headers = {}, defaultContentType, readBeforeWait = false }: WorkerCall): Promise<WorkerAnswer> {
  const h: Record<string, string> = { 'cf-connecting-ip': ip, ...headers };
  if (body !== undefined && defaultContentType !== undefined) h['content-type'] ??= defaultContentType;
  if (sid !== undefined) h['cookie'] = `sid=${sid}`;
  const ctx = createExecutionContext();
  const res = await fetchWorker(env, path, { method, headers: h, ...(body !== undefined ? { body } : {}) }, ctx);
  let text: string;
  if (readBeforeWait) {
    text = await res.text();
    await waitOnExecutionContext(ctx);
  } else {
    await waitOnExecutionContext(ctx);
    text = await res.text();
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { res, status: res.status, text, body: parsed };
}

/** The `sid` Set-Cookie of `res`: the whole line, and its value ('' when it clears the cookie). */
export function sidCookie(res: Response): { line: string | undefined; value: string | undefined } {
  const line = res.headers.getSetCookie().find((l) => l.startsWith('sid='));
  return { line, value: line === undefined ? undefined : /^sid=([^;]*)/.exec(line)?.[1] };
}
