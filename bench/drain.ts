/**
 * `npm run bench:drain`: how fast the cron's page-view flush (src/functions/views.ts, the
 * write-behind drain of src/lib/writebehind.ts) moves a backlog into D1, with the drain settings
 * of before (100 per batch, at most 20 batches per cron run: 2,000 entries a minute) side by side
 * with today's (drain until empty within the run's budget) in the same run.
 *
 * One run starts everything it needs and stops it at the end (also on Ctrl-C):
 * - a private redis-server on a free port and the REST gateway in this process, adding
 *   `GATEWAY_LATENCY_MS` (default 10) to every answer, i.e. a cron ~10 ms away from its Redis;
 * - the app's Worker bundled once (`wrangler deploy --dry-run`) and served by `wrangler dev
 *   --test-scheduled`, once per setting, each with a fresh copy of the migrated D1 database (local
 *   D1, Miniflare's SQLite) and a key prefix of its own.
 *
 * Per setting: the backlog is enqueued straight into Redis with the app's own enqueue script
 * (`BENCH_BACKLOG` views over the 1,200 products), then Miniflare's `/cdn-cgi/local/scheduled` is called, one cron run after
 * another, until the stream is empty; the table shows the entries per run, the runs (= minutes at
 * one run a minute) it took, the time spent inside runs and entries per second. D1's total must
 * equal the backlog (checked), so nothing was lost or counted twice.
 *
 * Environment: `BENCH_BACKLOG` (default 20000), `GATEWAY_LATENCY_MS` (default 10),
 * `BENCH_SETTINGS` (subset of `before,100,500,1000`).
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { ConfigError, loadConfig } from '../gateway/config.ts';
import { startGateway } from '../gateway/server.ts';
import { SCRIPTS } from '../src/lib/writebehind-scripts.ts';
import { startRedisServer } from '../test/support/redis-process.ts';
import { envList, fmtInt, machineDescription, say, table } from './common.ts';
import { checkInterrupted, interruptedNow, onStop, root, startWorker, stopAll, wrangler, type Worker } from './stack.ts';

const PRODUCTS = 1200;

interface Setting {
  name: string;
  label: string;
  vars: Record<string, string>;
}

const ALL_SETTINGS: Setting[] = [
  { name: 'before', label: 'before: 100 per batch, ≤ 20 batches a run', vars: { VIEW_DRAIN_BATCH_SIZE: '100', VIEW_DRAIN_MAX_BATCHES: '20' } },
  { name: '100', label: 'until empty, 100 per batch', vars: { VIEW_DRAIN_BATCH_SIZE: '100' } },
  { name: '500', label: 'until empty, 500 per batch (default)', vars: {} },
  { name: '1000', label: 'until empty, 1000 per batch', vars: { VIEW_DRAIN_BATCH_SIZE: '1000' } },
];

function envInt(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be a whole number ≥ ${min}, got "${raw}"`);
  return n;
}

/** Enqueues `n` views spread over the products, with the app's script, 1,000 per pipeline. */
async function fillBacklog(redis: Redis, stream: string, n: number): Promise<void> {
  await redis.script('LOAD', SCRIPTS.enqueue.src);
  for (let done = 0; done < n; done += 1_000) {
    const p = redis.pipeline();
    for (let i = done; i < Math.min(n, done + 1_000); i++) {
      const id = String(1 + ((i * 7919) % PRODUCTS));
      p.evalsha(SCRIPTS.enqueue.sha, 2, stream, `${stream}:tally`, 100_000_000, id, 'p', id);
    }
    const results = await p.exec();
    const failed = results?.find(([err]) => err);
    if (failed?.[0]) throw new Error(`enqueue failed: ${failed[0].message}`);
  }
}

/** Entries still in the stream (acked ones are deleted, so this is the backlog left). */
async function backlog(redis: Redis, stream: string): Promise<number> {
  return Number(await redis.xlen(stream));
}

/** One cron run (Miniflare's `/cdn-cgi/local/scheduled`, which answers once `scheduled()` is done); its duration in ms. */
async function cronRun(worker: Worker): Promise<number> {
  const started = performance.now();
  const res = await fetch(`${worker.url}/cdn-cgi/local/scheduled?cron=*+*+*+*+*`, { signal: AbortSignal.timeout(120_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`/cdn-cgi/local/scheduled answered ${res.status}: ${text.slice(0, 200)}`);
  return performance.now() - started;
}

async function d1Total(config: string, persistTo: string): Promise<number> {
  const out = await wrangler(['d1', 'execute', 'DB', '--local', '--config', config, '--persist-to', persistTo, '--json', '--command', 'SELECT coalesce(sum(views), 0) AS n FROM product_views'], 'reading D1');
  const doc = JSON.parse(out) as { results: { n: number }[] }[];
  return Number(doc[0]?.results[0]?.n ?? NaN);
}

async function main(): Promise<void> {
  const n = envInt('BENCH_BACKLOG', 20_000, 1);
  const latencyMs = envInt('GATEWAY_LATENCY_MS', 10, 0);
  const wanted = envList('BENCH_SETTINGS', ALL_SETTINGS.map((s) => s.name).join(','));
  const unknown = wanted.filter((w) => !ALL_SETTINGS.some((s) => s.name === w));
  if (unknown.length) throw new Error(`BENCH_SETTINGS: unknown setting(s) ${unknown.join(', ')}`);
  const settings = ALL_SETTINGS.filter((s) => wanted.includes(s.name));
  const machine = machineDescription();
  say(`machine: ${machine}; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'edge-redis-drain-'));
  onStop(`the temporary folder ${tmp}`, async () => rmSync(tmp, { recursive: true, force: true }));
  const envFile = path.join(tmp, 'empty.env');
  writeFileSync(envFile, '');

  say('starting redis-server on a free port (no persistence)');
  const redisServer = await startRedisServer();
  onStop('redis-server', () => redisServer.stop());
  const direct = new Redis(redisServer.port, '127.0.0.1');
  onStop('the direct Redis connection', async () => void direct.disconnect());
  const token = randomBytes(24).toString('base64url');
  let config;
  try {
    config = loadConfig({ REDIS_URL: redisServer.url, GATEWAY_HOST: '127.0.0.1', GATEWAY_PORT: '0', GATEWAY_TOKEN: token, GATEWAY_LATENCY_MS: String(latencyMs) });
  } catch (err) {
    if (err instanceof ConfigError) throw new Error(`gateway config: ${err.message}`, { cause: err });
    throw err;
  }
  const gateway = await startGateway(config);
  onStop('the gateway', () => gateway.close());
  say(`gateway ready at ${gateway.url}, adding ${latencyMs} ms to every answer (GATEWAY_LATENCY_MS)`);

  const wranglerToml = path.join(root, 'wrangler.toml');
  const bundle = path.join(tmp, 'dist');
  say('bundling the Worker (wrangler deploy --dry-run)');
  await wrangler(['deploy', '--dry-run', '--config', wranglerToml, '--outdir', bundle], 'bundling');
  const template = path.join(tmp, 'state-template');
  say(`applying D1 migrations (schema + ${PRODUCTS} products) into a template database`);
  await wrangler(['d1', 'migrations', 'apply', 'DB', '--local', '--config', wranglerToml, '--persist-to', template], 'migrating');

  const rows: string[][] = [];
  for (const s of settings) {
    checkInterrupted();
    const persistTo = path.join(tmp, `state-${s.name}`);
    cpSync(template, persistTo, { recursive: true });
    const app = `bench${s.name}`;
    const stream = `${app}:development:wb:{views}`;
    say(`${s.name}: enqueueing a backlog of ${fmtInt(n)} views into ${stream}`);
    await fillBacklog(direct, stream, n);
    say(`${s.name}: starting wrangler dev (${Object.entries(s.vars).map(([k, v]) => `${k}=${v}`).join(' ') || 'defaults'})`);
    const worker = await startWorker(s.name, {
      config: wranglerToml, script: path.join(bundle, 'index.js'), persistTo, envFile,
      secrets: { UPSTASH_REDIS_REST_URL: gateway.url, UPSTASH_REDIS_REST_TOKEN: token, ADMIN_TOKEN: randomBytes(24).toString('base64url') },
      vars: { REDIS_KEY_APP: app, ...s.vars },
    });
    const runs: { ms: number; drained: number }[] = [];
    let left = await backlog(direct, stream);
    while (left > 0) {
      checkInterrupted();
      const ms = await cronRun(worker);
      const now = await backlog(direct, stream);
      runs.push({ ms, drained: left - now });
      if (now >= left) throw new Error(`${s.name}: a cron run drained nothing (${now} left)`);
      left = now;
      say(`${s.name}: run ${runs.length} drained ${fmtInt(runs.at(-1)!.drained)} in ${(ms / 1000).toFixed(2)} s, ${fmtInt(left)} left`);
    }
    await worker.stop();
    const total = await d1Total(wranglerToml, persistTo);
    if (total !== n) throw new Error(`${s.name}: D1 holds ${total} views, the backlog was ${n}`);
    const ms = runs.reduce((a, r) => a + r.ms, 0);
    rows.push([s.label, fmtInt(n), fmtInt(Math.max(...runs.map((r) => r.drained))), String(runs.length), (ms / 1000).toFixed(2), fmtInt(n / (ms / 1000)), fmtInt(total)]);
  }

  process.stdout.write(
    `\nMachine: ${machine}\n` +
      `Gateway latency ${latencyMs} ms per Redis HTTP request; local D1 (wrangler dev, Miniflare). One cron run a minute in production.\n` +
      'runs = cron runs (minutes) to clear the backlog; s in runs = time spent inside them; entries/s = backlog / that time.\n\n' +
      table(['drain setting', 'backlog', 'most per run', 'runs', 's in runs', 'entries/s', 'D1 total'], rows, 1) +
      '\n\n',
  );
}

main().then(
  async () => {
    await stopAll();
    process.exit(0);
  },
  async (err: unknown) => {
    if (interruptedNow()) return;
    process.stderr.write(`bench: failed: ${err instanceof Error ? err.message : String(err)}\n`);
    await stopAll();
    process.exit(1);
  },
);
