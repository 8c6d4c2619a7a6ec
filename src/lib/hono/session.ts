/**
 * The session middleware: a lazy session (`edge-redis/session`) on `c.var.session`, its cookie read
 * from and written to this request, saved (awaited) after the handler. Use it with an `onError`
 * that renders library errors (`onEdgeRedisError`, or your own with `edgeRedisProblem`), so that
 * Redis being down answers 503 problem+json.
 *
 * @example
 * type AppEnv = { Bindings: Env; Variables: SessionVariables<{ cart: string[] }> };
 * const app = new Hono<AppEnv>();
 * app.onError(onEdgeRedisError);
 * app.use(session({ redis: createRedis(env), keys: keySchema({ app: 'shop', env: 'prod' }) }));
 * app.post('/login', async (c) => {
 *   await c.var.session.login(await verifyPassword(c)); // new id, cart kept
 *   return c.redirect('/');
 * });
 */
import type { Context, Env, MiddlewareHandler } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import { createSessionStore, type Session, type SessionData, type SessionStore, type SessionStoreOptions } from '../session/index.ts';

/** Cookie attributes. A `__Host-` name needs `secure`, path `/` and no `domain` (checked at setup). */
export interface SessionCookieOptions {
  /** Over plain http (other than localhost, which browsers treat as secure) use e.g. `name: 'sid', secure: false`. @default "__Host-sid" */
  name?: string;
  /** @default true */
  secure?: boolean;
  /** @default true */
  httpOnly?: boolean;
  /** @default "Lax" */
  sameSite?: 'Strict' | 'Lax' | 'None';
  /** @default "/" */
  path?: string;
  /** @default undefined (host-only) */
  domain?: string;
}

/** The context variable the middleware sets; merge into your app's `Variables`. */
export type SessionVariables<T extends SessionData = SessionData> = { session: Session<T> };

/** The environment the middleware's handlers see: the app's, with `c.var.session`. */
export type SessionEnv<T extends SessionData = SessionData, E extends Env = Env> = E & { Variables: SessionVariables<T> };

/** A store (or a function of the context choosing one, e.g. the env's), or what builds one. */
export type SessionMiddlewareOptions<T extends SessionData = SessionData, E extends Env = Env> = ({ store: SessionStore | ((c: Context<SessionEnv<T, E>>) => SessionStore) } | SessionStoreOptions) & {
  cookie?: SessionCookieOptions;
};

/** The cookie attributes, checked: a bad name or a combination browsers refuse is a TypeError at setup. */
function cookieAttributes({ name = '__Host-sid', secure = true, httpOnly = true, sameSite = 'Lax', path = '/', domain }: SessionCookieOptions = {}) {
  if (!/^[\w!#$%&'*+\-.^`|~]+$/.test(name)) throw new TypeError(`session: invalid cookie name "${name}"`);
  if (/^__host-/i.test(name) && (!secure || path !== '/' || domain !== undefined)) throw new TypeError('session: a __Host- cookie needs secure: true, path "/" and no domain');
  if ((/^__secure-/i.test(name) || sameSite === 'None') && !secure) throw new TypeError('session: __Secure- cookies and SameSite=None need secure: true');
  return { name, attrs: { secure, httpOnly, sameSite, path, ...(domain !== undefined ? { domain } : {}) } };
}

/**
 * Hono middleware: a lazy `Session` on `c.var.session`, saved after the handler. A crash (5xx)
 * keeps the stored state; a deliberate 4xx (a failed login counting attempts) still saves.
 */
export function session<T extends SessionData = SessionData, E extends Env = Env>(options: SessionMiddlewareOptions<T, E>): MiddlewareHandler<SessionEnv<T, E>> {
  const { name, attrs } = cookieAttributes(options.cookie);
  const store = 'store' in options ? options.store : createSessionStore(options);
  return async function sessionMiddleware(c, next) {
    const s = (typeof store === 'function' ? store(c) : store).open<T>({
      cookie: getCookie(c, name),
      userAgent: c.req.header('user-agent'),
      setCookie: (value, maxAge) => setCookie(c, name, value, { ...attrs, maxAge }),
    });
    c.set('session', s);
    await next();
    if (c.error && c.res.status >= 500) return;
    await s.save();
  };
}
