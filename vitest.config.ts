/**
 * Two projects, one run. `gateway` tests the Redis REST gateway in Node; `workers` runs the Worker
 * and src/lib inside workerd (Miniflare) against the same real Redis through the gateway.
 * test/global-setup.ts starts Redis and the gateways once for both and provides their addresses;
 * the injected bindings override the vars of wrangler.toml.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cloudflareTest, readD1Migrations } from '@cloudflare/vitest-plugin';
import { defineConfig, type Plugin } from 'vitest/config';

/**
 * `edge-redis` and `edge-redis/<entry>` (the package importing itself by name, as its users do)
 * resolved through package.json's `exports` to the entry's source: vite does not resolve a
 * package's own name, and the "edge-redis:source" condition names the source of each export. Only
 * what `exports` lists resolves, as for a user of the package.
 */
function edgeRedisSource(): Plugin {
  const root = new URL('./', import.meta.url);
  const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { name: string; exports: Record<string, Record<string, string>> };
  return {
    name: 'edge-redis-source',
    enforce: 'pre',
    resolveId(id) {
      if (id !== pkg.name && !id.startsWith(`${pkg.name}/`)) return undefined;
      const target = pkg.exports[`.${id.slice(pkg.name.length)}`]?.['edge-redis:source'];
      if (target === undefined) throw new Error(`${id} is not an entry of package.json "exports"`);
      return fileURLToPath(new URL(target, root));
    },
  };
}

// The D1 migrations (schema + seed), applied to the test database by test/apply-migrations.ts.
const migrations = await readD1Migrations('./migrations');

/** `APP_ENV` as wrangler.toml ships it (what a deploy gets by doing nothing), for test/functions/defaults.test.ts. */
const shippedAppEnv = /^APP_ENV\s*=\s*"([^"]*)"/m.exec(readFileSync(new URL('./wrangler.toml', import.meta.url), 'utf8'))?.[1] ?? '(unset)';

export default defineConfig({
  test: {
    globalSetup: ['./test/global-setup.ts'],
    // The Worker's one-line-per-request log (src/middleware.ts) would bury the suite's output;
    // test/functions/observability.test.ts reads it itself.
    onConsoleLog: (log: string) => !log.startsWith('{"msg":"request"'),
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
          edgeRedisSource(),
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: {
              bindings: {
                UPSTASH_REDIS_REST_URL: inject('gatewayUrl'),
                UPSTASH_REDIS_REST_TOKEN: inject('gatewayToken'),
                ADMIN_TOKEN: 'test-admin-token',
                // wrangler.toml defaults to production (Secure `__Host-` cookies); the tests call the
                // Worker over plain http with `sid`, as `npm run dev` does. test/functions/defaults.test.ts
                // checks the production default itself.
                APP_ENV: 'development',
                TEST_MIGRATIONS: migrations,
              },
            },
          })),
        ],
        test: {
          name: 'workers',
          provide: { shippedAppEnv },
          setupFiles: ['./test/apply-migrations.ts'],
          include: ['test/lib/**/*.test.ts', 'test/functions/**/*.test.ts'],
        },
      },
    ],
  },
});
