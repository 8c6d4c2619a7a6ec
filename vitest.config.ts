/**
 * Two projects, one run. `gateway` tests the Redis REST gateway in Node; `workers` runs the Worker
 * and src/lib inside workerd (Miniflare) against the same real Redis through the gateway.
 * test/global-setup.ts starts Redis and the gateways once for both and provides their addresses;
 * the injected bindings override the vars of wrangler.toml.
 */
import { cloudflareTest, readD1Migrations } from '@cloudflare/vitest-plugin';
import { defineConfig } from 'vitest/config';

// The D1 migrations (schema + seed), applied to the test database by test/apply-migrations.ts.
const migrations = await readD1Migrations('./migrations');

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
                ADMIN_TOKEN: 'test-admin-token',
                TEST_MIGRATIONS: migrations,
              },
            },
          })),
        ],
        test: {
          name: 'workers',
          setupFiles: ['./test/apply-migrations.ts'],
          include: ['test/lib/**/*.test.ts', 'test/functions/**/*.test.ts'],
        },
      },
    ],
  },
});
