import { env } from 'cloudflare:workers';
import { expect, test } from 'vitest';
test('D1 is migrated and seeded', async () => {
  const row = await env.DB.prepare('SELECT count(*) AS n, count(DISTINCT category) AS c FROM products').first<{ n: number; c: number }>();
  expect(row).toEqual({ n: 1200, c: 6 });
});
