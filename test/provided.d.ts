/**
 * Values test/global-setup.ts hands to the tests: `inject(key)` in a test file, and `inject` in
 * vitest.config.ts to turn them into Miniflare bindings.
 */
import 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The private Redis behind every gateway below, `redis://127.0.0.1:<port>` (or REDIS_URL). */
    redisUrl: string;
    /** The shared gateway in front of `redisUrl`, admin commands allowed. */
    gatewayUrl: string;
    /** Bearer token of every gateway below. */
    gatewayToken: string;
    /** A gateway in front of the same Redis that waits 400 ms before each answer (GATEWAY_LATENCY_MS). */
    slowGatewayUrl: string;
    /** A real gateway whose Redis process has been stopped: it answers 503. */
    downGatewayUrl: string;
    /** `http://127.0.0.1:<port>` where every connection is reset at once: every request is a network error. */
    closedUrl: string;
    /** The fault lab (test/support/fault-lab.ts): private Redis + gateway pairs to break for real. */
    faultLabUrl: string;
    /** Bearer token of the fault lab. */
    faultLabToken: string;
    /** `APP_ENV` in wrangler.toml's [vars] (vitest.config.ts reads it; the tests run with "development"). */
    shippedAppEnv: string;
    /** The app as `npm run dev` serves it, for the browser tests (test/browser/global-setup.ts). */
    appUrl: string;
  }
}
