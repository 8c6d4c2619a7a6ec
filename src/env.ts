/**
 * The Hono environment of the whole app. `Env` (bindings, vars and secrets) is generated from
 * wrangler.toml by `npm run cf-typegen` into worker-configuration.d.ts; never write it by hand.
 * Context variables have fixed names, set by the middlewares named beside them.
 *
 * @example
 * const app = new Hono<AppEnv>();
 * app.get('/x', (c) => c.text(c.env.APP_ENV));
 */
import type { Session } from 'edge-redis/session';
import type { LimitResult } from 'edge-redis/ratelimit';
import type { Services } from './services.ts';

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
    /** `provideServices` (src/middleware.ts): this env's services, built once per env (src/services.ts). */
    services: Services;
    /** `sessions` (src/middleware.ts): lazy, no Redis call until used. */
    session: Session<SessionShape>;
    /** `defaultRateLimit` (src/middleware.ts): the check's result. */
    rateLimit?: LimitResult;
  };
};
