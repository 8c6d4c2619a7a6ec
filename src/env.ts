/**
 * The Hono environment of the whole app. `Env` (bindings, vars and secrets) is generated from
 * wrangler.toml by `npm run cf-typegen` into worker-configuration.d.ts; never write it by hand.
 * Context variables have fixed names, set by the middlewares named beside them.
 *
 * @example
 * const app = new Hono<AppEnv>();
 * app.get('/x', (c) => c.text(c.env.APP_ENV));
 */
import type { LimitResult } from './lib/ratelimit.ts';
import type { Session } from './lib/session.ts';

/** What a visitor's session holds (src/functions/auth.ts, cart.ts). */
export type SessionShape = {
  /** productId → quantity */
  cart: Record<string, number>;
  /** The cart's id: minted with its first line, kept while it changes, gone with it. D1 records it on the order (`orders.cart_id`), so one cart is never ordered twice. */
  cartId: string;
};

export type AppEnv = {
  Bindings: Env;
  Variables: {
    /** `session()` middleware (src/lib/session.ts): lazy, no Redis call until used. */
    session: Session<SessionShape>;
    /** Rate-limit middleware: the check's result. */
    rateLimit?: LimitResult;
    /** Set once a request is known to belong to a logged-in user (rate limits key on it). */
    user?: string | { id: string | number };
  };
};
