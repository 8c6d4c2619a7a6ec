/** Runs in workerd before each workers test file: brings the D1 test database to the latest schema and seed (idempotent). */
import { env } from 'cloudflare:workers';
import { applyD1Migrations } from 'cloudflare:test';

await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
