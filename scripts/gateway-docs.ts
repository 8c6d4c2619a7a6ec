/**
 * `npm run docs:gateway`: regenerates the gateway's command lists in README.md from a Redis
 * command table, and its endpoints table (/healthz, /readyz, /metrics), both from gateway/command-docs.ts. It starts a private redis-server on a free port (or
 * reads `REDIS_URL`), asks it `COMMAND` and `INFO server`, and rewrites the block between the
 * markers. test/gateway/command-docs.test.ts fails when the block is stale.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { currentBlock, ENDPOINTS_BEGIN, ENDPOINTS_END, renderCommandLists, renderEndpoints, replaceBlock } from '../gateway/command-docs.ts';
import { parseCommandTable, versionOf } from '../gateway/command-table.ts';
import { redactUrl } from '../gateway/config.ts';
import { startRedisServer, type RedisProcess } from '../test/support/redis-process.ts';

const README = fileURLToPath(new URL('../README.md', import.meta.url));

function say(line: string): void {
  process.stdout.write(`docs:gateway: ${line}\n`);
}

async function main(): Promise<void> {
  let server: RedisProcess | undefined;
  let url = process.env['REDIS_URL'];
  if (url) {
    say(`reading the command table of ${redactUrl(url)}`);
  } else {
    say('starting a private redis-server on a free port to read its command table');
    server = await startRedisServer();
    url = server.url;
  }
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    const table = parseCommandTable(await redis.call('COMMAND'), versionOf(String(await redis.call('INFO', 'server'))));
    const readme = readFileSync(README, 'utf8');
    const block = renderCommandLists(table);
    const endpoints = renderEndpoints();
    if (currentBlock(readme) === block && currentBlock(readme, ENDPOINTS_BEGIN, ENDPOINTS_END) === endpoints) {
      say(`README.md is up to date (Redis ${table.version}, ${table.commands.size} commands; endpoints)`);
      return;
    }
    writeFileSync(README, replaceBlock(replaceBlock(readme, block), endpoints, ENDPOINTS_BEGIN, ENDPOINTS_END));
    say(`rewrote the command lists (Redis ${table.version}, ${table.commands.size} commands) and the endpoints table in README.md`);
  } finally {
    redis.disconnect();
    await server?.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`docs:gateway: failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
