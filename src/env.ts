/**
 * The Hono environment of the whole app. `Env` (bindings, vars and secrets) is generated from
 * wrangler.toml by `npm run cf-typegen` into worker-configuration.d.ts; never write it by hand.
 * Context variables are added here, under fixed names, as middlewares come to need them.
 *
 * @example
 * const app = new Hono<AppEnv>();
 * app.get('/x', (c) => c.text(c.env.APP_ENV));
 */
export type AppEnv = {
  Bindings: Env;
  Variables: Record<never, never>;
};
