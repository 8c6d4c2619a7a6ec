/**
 * `npm run bench:api`: the app's hot read endpoints under `wrangler dev`, side by side with a
 * baseline Worker written the way the seed articles write them (bench/baseline/worker.ts).
 *
 * One run starts everything it needs and stops it at the end (also on Ctrl-C):
 * - a private redis-server on a free port and the REST gateway in this process, adding
 *   `GATEWAY_LATENCY_MS` (default 20) to every answer, i.e. a Worker ~20 ms away from its Redis;
 * - both Workers bundled once (`wrangler deploy --dry-run`), so edits to src/ during the run cannot
 *   reload them mid-measurement, then served by `wrangler dev --no-bundle` on free ports, each with
 *   its own D1 database (migrations applied into a temporary `--persist-to` folder; the dev
 *   database under .wrangler/state is never touched) and `API_RATE_LIMIT` at 1,000,000/min so the
 *   bench measures the limiter's cost, not its refusals.
 *
 * Workloads (every request must answer 200, else the run stops):
 * - `hot`:  `GET /products/:id` over ids 1..10 (warm cache);
 * - `list`: `GET /products?category=books&page=1` (warm cache);
 * - `mix`:  `GET /products/:id`, 80 % the hot ids and 20 % spread over 11..1200, the same id
 *   sequence for both Workers, so the misses are comparable (fewer as the run goes on).
 *
 * Environment:
 * - `BENCH_CONCURRENCY`: comma-separated requests in flight per cell (default `1,16`)
 * - `BENCH_DURATION_MS`: measured time per cell (default 5000); `BENCH_WARMUP_MS` (default 1000)
 * - `BENCH_WORKLOADS`: subset of `hot,list,mix`
 * - `GATEWAY_LATENCY_MS`: simulated Worker↔Redis latency (default 20)
 * - `GATEWAY_LOG_REQUESTS=true`: print every request the gateway receives (to see the traffic)
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ConfigError, loadConfig } from '../gateway/config.ts';
import { startGateway, type RunningGateway } from '../gateway/server.ts';
import { startRedisServer, type RedisProcess } from '../test/support/redis-process.ts';
import { envConcurrencies, envWorkloads, fmtInt, fmtMs, machineDescription, percentile, say, table } from './common.ts';
import { checkInterrupted, interruptedNow, onStop, root, startWorker, stopAll, wrangler, type Worker } from './stack.ts';

/** High enough that no request of the bench is refused; the limiter still runs on every one. */
const RATE_LIMIT = '1000000';
const HOT_IDS = 10;
const PRODUCTS = 1200;

function envInt(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be a whole number ≥ ${min}, got "${raw}"`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// measuring

/** A well-mixed 32-bit hash of i (same input, same output), for reproducible id sequences. */
function hash(i: number): number {
  let x = Math.imul(i ^ 0x9e3779b9, 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

interface Workload {
  name: string;
  label: string;
  path: (i: number) => string;
  /** Requested once on each Worker before the timed warmup, so "warm" means every one is cached. */
  prime: string[];
}

const hotPaths = Array.from({ length: HOT_IDS }, (_, i) => `/products/${i + 1}`);

const ALL_WORKLOADS: Workload[] = [
  { name: 'hot', label: `GET /products/:id (hot, ${HOT_IDS} ids)`, path: (i) => `/products/${1 + (i % HOT_IDS)}`, prime: hotPaths },
  { name: 'list', label: 'GET /products?category=books&page=1', path: () => '/products?category=books&page=1', prime: ['/products?category=books&page=1'] },
  {
    name: 'mix',
    label: 'GET /products/:id (mix, 80 % hot)',
    path: (i) => {
      const h = hash(i);
      return `/products/${h % 5 === 0 ? HOT_IDS + 1 + ((h >>> 3) % (PRODUCTS - HOT_IDS)) : 1 + ((h >>> 3) % HOT_IDS)}`;
    },
    prime: hotPaths,
  },
];

interface Cell {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  /** X-Cache values seen (HIT / STALE / MISS), for the progress line. */
  cache: Map<string, number>;
}

/** One request as a client at `ip`; anything but 200 stops the run. */
async function get(worker: Worker, p: string, ip = '198.51.100.250'): Promise<{ body: string; cache: string }> {
  const res = await fetch(`${worker.url}${p}`, { headers: { 'cf-connecting-ip': ip } });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`${worker.name}: GET ${p} answered ${res.status}: ${body.slice(0, 300)}`);
  return { body, cache: res.headers.get('x-cache') ?? '-' };
}

/**
 * Keeps `concurrency` requests in flight for `durationMs`; request i goes to `path(offset + i)`.
 * Each in-flight slot sends its own `cf-connecting-ip`, as distinct clients would.
 */
async function run(worker: Worker, w: Workload, concurrency: number, durationMs: number, offset: number): Promise<Cell> {
  let latencies = new Float64Array(1 << 14);
  let count = 0;
  let next = 0;
  const cache = new Map<string, number>();
  const start = performance.now();
  const deadline = start + durationMs;
  const slot = async (n: number): Promise<void> => {
    const ip = `198.51.100.${n + 1}`;
    while (performance.now() < deadline) {
      checkInterrupted();
      const t0 = performance.now();
      const { cache: xc } = await get(worker, w.path(offset + next++), ip);
      const dt = performance.now() - t0;
      cache.set(xc, (cache.get(xc) ?? 0) + 1);
      if (count === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[count++] = dt;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, n) => slot(n)));
  const elapsed = performance.now() - start;
  const sorted = latencies.subarray(0, count).sort();
  return { requests: count, rps: (count * 1000) / elapsed, p50: percentile(sorted, 50), p99: percentile(sorted, 99), cache };
}

/** Gateway totals from its Prometheus endpoint: HTTP requests (Redis traffic only) and commands. */
async function gatewayTotals(gateway: RunningGateway): Promise<{ http: number; commands: number }> {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  let http = 0;
  let commands = 0;
  for (const line of text.split('\n')) {
    const m = /^(gateway_http_requests_total|gateway_commands_total)\{([^}]*)\} (\d+(?:\.\d+)?)$/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (m[1] === 'gateway_commands_total') commands += value;
    else if (!/route="\/(healthz|metrics)"/.test(m[2] ?? '')) http += value;
  }
  return { http, commands };
}

function fmtCache(cache: Map<string, number>): string {
  const total = [...cache.values()].reduce((a, b) => a + b, 0);
  return [...cache.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${((100 * v) / total).toFixed(v === total ? 0 : 1)}%`)
    .join(', ');
}

/** Both Workers must serve the same bodies, or the comparison means nothing. */
async function checkSameAnswers(ours: Worker, baseline: Worker): Promise<void> {
  for (const p of ['/products/1', `/products/${PRODUCTS}`, '/products?category=books&page=1']) {
    const [a, b] = await Promise.all([ours, baseline].map(async (w) => (await get(w, p)).body));
    if (a !== b) throw new Error(`ours and the baseline answer GET ${p} differently:\n  ours:     ${a?.slice(0, 300)}\n  baseline: ${b?.slice(0, 300)}`);
    say(`GET ${p}: both answer 200 with the same body (${a?.length ?? 0} bytes)`);
  }
}

async function main(): Promise<void> {
  const concurrencies = envConcurrencies('1,16');
  const durationMs = envInt('BENCH_DURATION_MS', 5_000);
  const warmupMs = envInt('BENCH_WARMUP_MS', 1_000);
  const latencyMs = envInt('GATEWAY_LATENCY_MS', 20, 0);
  const workloads = envWorkloads(ALL_WORKLOADS);

  const machine = machineDescription();
  say(`machine: ${machine}`);

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'edge-redis-bench-'));
  onStop(`the temporary folder ${tmp}`, async () => rmSync(tmp, { recursive: true, force: true }));
  say(`working in ${tmp} (bundles, D1 databases; removed at the end)`);
  const envFile = path.join(tmp, 'empty.env');
  writeFileSync(envFile, '');

  say('starting redis-server on a free port (no persistence)');
  checkInterrupted();
  const redisServer: RedisProcess = await startRedisServer();
  onStop('redis-server', () => redisServer.stop());
  checkInterrupted();
  say(`redis-server ready at ${redisServer.url}`);

  const token = randomBytes(24).toString('base64url');
  let config;
  try {
    config = loadConfig({ REDIS_URL: redisServer.url, GATEWAY_HOST: '127.0.0.1', GATEWAY_PORT: '0', GATEWAY_TOKEN: token, GATEWAY_LATENCY_MS: String(latencyMs), GATEWAY_LOG_REQUESTS: process.env['GATEWAY_LOG_REQUESTS'] });
  } catch (err) {
    if (err instanceof ConfigError) throw new Error(`gateway config: ${err.message}`, { cause: err });
    throw err;
  }
  const gateway = await startGateway(config);
  onStop('the gateway', () => gateway.close());
  checkInterrupted();
  say(`gateway ready at ${gateway.url}, adding ${latencyMs} ms to every answer (GATEWAY_LATENCY_MS)`);

  const targets = [
    { name: 'ours', config: path.join(root, 'wrangler.toml'), bundle: path.join(tmp, 'ours-dist'), entry: 'index.js' },
    { name: 'baseline', config: path.join(root, 'bench', 'baseline', 'wrangler.toml'), bundle: path.join(tmp, 'baseline-dist'), entry: 'worker.js' },
  ] as const;
  for (const t of targets) {
    const persistTo = path.join(tmp, `${t.name}-state`);
    say(`${t.name}: bundling (wrangler deploy --dry-run --config ${path.relative(root, t.config)})`);
    await wrangler(['deploy', '--dry-run', '--config', t.config, '--outdir', t.bundle], `bundling ${t.name}`);
    say(`${t.name}: applying D1 migrations (schema + ${PRODUCTS} products) into ${path.relative(tmp, persistTo)}/`);
    await wrangler(['d1', 'migrations', 'apply', 'DB', '--local', '--config', t.config, '--persist-to', persistTo], `migrating ${t.name}`);
  }
  say('starting wrangler dev for both Workers');
  const secrets = { UPSTASH_REDIS_REST_URL: gateway.url, UPSTASH_REDIS_REST_TOKEN: token, ADMIN_TOKEN: randomBytes(24).toString('base64url') };
  const [ours, baseline] = await Promise.all(
    targets.map((t) => startWorker(t.name, { config: t.config, script: path.join(t.bundle, t.entry), persistTo: path.join(tmp, `${t.name}-state`), envFile, secrets, vars: { API_RATE_LIMIT: RATE_LIMIT } })),
  );
  if (!ours || !baseline) throw new Error('a Worker did not start');
  say(`ours at ${ours.url}, baseline at ${baseline.url}`);
  await checkSameAnswers(ours, baseline);
  checkInterrupted();

  const cells = workloads.length * concurrencies.length * 2;
  const warmConcurrency = Math.max(...concurrencies);
  say(
    `running ${workloads.map((w) => w.name).join(', ')} at concurrency ${concurrencies.join(', ')}: ${cells} cells × ${durationMs} ms ` +
      `plus ${warmupMs} ms warmup per workload and Worker (~${Math.ceil((cells * durationMs + workloads.length * 2 * warmupMs) / 1000)} s)`,
  );
  const rows: string[][] = [];
  const trafficRows: string[][] = [];
  let offset = 0;
  for (const w of workloads) {
    say(`${w.name}: warming up both Workers at concurrency ${warmConcurrency}`);
    for (const worker of [ours, baseline]) {
      for (const p of w.prime) await get(worker, p);
      await run(worker, w, warmConcurrency, warmupMs, 0);
    }
    for (const c of concurrencies) {
      // The same request sequence for both Workers, a fresh stretch of it per cell.
      offset += 1_000_000;
      const measured: Record<string, { cell: Cell; http: number; commands: number }> = {};
      for (const worker of [ours, baseline]) {
        const before = await gatewayTotals(gateway);
        const cell = await run(worker, w, c, durationMs, offset);
        // Work a Worker left in waitUntil (view counts, refreshes) lands a moment after its answer.
        await new Promise((r) => setTimeout(r, 250));
        const after = await gatewayTotals(gateway);
        measured[worker.name] = { cell, http: (after.http - before.http) / cell.requests, commands: (after.commands - before.commands) / cell.requests };
        say(`${w.name} ×${c} ${worker.name}: ${fmtInt(cell.rps)} req/s, p50 ${fmtMs(cell.p50)} ms, p99 ${fmtMs(cell.p99)} ms, X-Cache ${fmtCache(cell.cache)}`);
      }
      const o = measured['ours'];
      const b = measured['baseline'];
      if (!o || !b) throw new Error('a cell was not measured');
      rows.push([w.label, String(c), fmtInt(o.cell.rps), fmtMs(o.cell.p50), fmtMs(o.cell.p99), fmtInt(b.cell.rps), fmtMs(b.cell.p50), fmtMs(b.cell.p99), `${(b.cell.p50 / o.cell.p50).toFixed(1)}×`]);
      trafficRows.push([w.label, String(c), o.http.toFixed(2), o.commands.toFixed(2), b.http.toFixed(2), b.commands.toFixed(2)]);
    }
  }

  process.stdout.write(
    `\nMachine: ${machine}\n` +
      `Gateway latency ${latencyMs} ms per Redis HTTP request; ${durationMs} ms per cell after ${warmupMs} ms warmup.\n` +
      'rps = answered requests per second; p50/p99 in ms; p50 ratio = baseline p50 / ours p50.\n\n' +
      table(['endpoint', 'concurrency', 'ours rps', 'p50', 'p99', 'baseline rps', 'p50', 'p99', 'p50 ratio'], rows, 2) +
      '\n\nRedis traffic per API request (from the gateway\'s /metrics: HTTP requests and Redis commands):\n\n' +
      table(['endpoint', 'concurrency', 'ours HTTP', 'ours cmds', 'baseline HTTP', 'baseline cmds'], trafficRows, 2) +
      '\n\n',
  );
}

main()
  .then(
    async () => {
      await stopAll();
      process.exit(0);
    },
    async (err: unknown) => {
      if (interruptedNow()) return; // the signal handler is stopping everything and exits
      process.stderr.write(`bench: failed: ${err instanceof Error ? err.message : String(err)}\n`);
      if (err instanceof Error && err.cause instanceof Error) process.stderr.write(`bench:   cause: ${err.cause.message}\n`);
      await stopAll();
      process.exit(1);
    },
  );
