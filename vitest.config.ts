/**
 * Two projects, one run. `gateway` tests the Redis REST gateway in Node; `workers` runs the Worker
 * and src/lib inside workerd (Miniflare) against the same real Redis through the gateway.
 * test/global-setup.ts starts Redis and the gateways once for both and provides their addresses;
 * the injected bindings override the vars of wrangler.toml.
 */
import { cloudflareTest } from '@cloudflare/vitest-plugin';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['./test/global-setup.ts'],
    projects: [
      {
        test: {
          name: 'gateway',
          environment: 'node',
          include: ['test/gateway/**/*.test.ts'],
        },
      },
      {
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: {
              bindings: {
                UPSTASH_REDIS_REST_URL: inject('gatewayUrl'),
                UPSTASH_REDIS_REST_TOKEN: inject('gatewayToken'),
              },
            },
          })),
        ],
        test: {
          name: 'workers',
          include: ['test/lib/**/*.test.ts', 'test/functions/**/*.test.ts'],
        },
      },
    ],
  },
});
