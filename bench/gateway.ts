/**
 * `npm run bench:gateway`: what the REST gateway costs compared with talking to Redis over TCP.
 *
 * Each workload runs through (a) the gateway with `@upstash/redis`, the client the Worker uses, and
 * (b) straight to Redis with `ioredis`, the client the gateway itself uses, so the ratio isolates
 * the HTTP + JSON + base64 hop. Both run in this process on the same event loop as the gateway,
 * which is the setup of the tests (globalSetup), not of production: read the numbers as relative.
 *
 * Environment:
 * - `REDIS_URL`: use this Redis instead of starting one (keys are prefixed and deleted, never flushed)
 * - `BENCH_CONCURRENCY`: comma-separated in-flight requests per cell (default `1,8,32`)
 * - `BENCH_DURATION_MS`: measured time per cell (default 3000); `BENCH_WARMUP_MS` (default 500)
 * - `BENCH_WORKLOADS`: subset of `get,set,pipeline10,pipeline100`
 * - `BENCH_BASELINE`: another checkout of this repository (e.g. `git worktree add /tmp/base <commit>`
 *   plus `npm install` there): its gateway runs in this process too, against the same Redis, and
 *   every cell is measured `BENCH_ROUNDS` times (default 3) on each gateway, alternating, so that a
 *   busy machine slows both alike; the table gives medians and gateway / baseline.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Redis as Upstash } from '@upstash/redis';
import { Redis as IORedis } from 'ioredis';
import { ConfigError, loadConfig, redactUrl } from '../gateway/config.ts';
import { startGateway, type RunningGateway } from '../gateway/server.ts';
import { startRedisServer, type RedisProcess } from '../test/support/redis-process.ts';
import { envConcurrencies, envWorkloads, fmtInt, fmtMs, machineDescription, percentile, say, table } from './common.ts';

const KEYSPACE = 1_000;
const VALUE = 'v'.repeat(100);

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive whole number, got "${raw}"`);
  return n;
}

/** One unit of work: resolves once all its commands have answered. */
type Op = (i: number) => Promise<unknown>;

interface Target {
  get(key: string): Op;
  set(key: string): Op;
  pipeline(size: number): Op;
}

interface Workload {
  name: string;
  /** Commands per op, so throughput can be reported in commands/s. */
  commands: number;
  op: (t: Target) => Op;
}

interface Cell {
  ops: number;
  commandsPerSec: number;
  p50: number;
  p99: number;
}

function keyFor(prefix: string, i: number): string {
  return `${prefix}${i % KEYSPACE}`;
}

/** Half SET, half GET, interleaved, over the shared keyspace. */
function mixed(size: number, i: number): { set: boolean; n: number }[] {
  return Array.from({ length: size }, (_, j) => ({ set: j % 2 === 0, n: i * size + j }));
}

function upstashTarget(redis: Upstash, prefix: string): Target {
  return {
    get: () => (i) => redis.get(keyFor(prefix, i)),
    set: () => (i) => redis.set(keyFor(prefix, i), VALUE),
    pipeline: (size) => (i) => {
      const p = redis.pipeline();
      for (const c of mixed(size, i)) {
        if (c.set) p.set(keyFor(prefix, c.n), VALUE);
        else p.get(keyFor(prefix, c.n));
      }
      return p.exec();
    },
  };
}

function ioredisTarget(redis: IORedis, prefix: string): Target {
  return {
    get: () => (i) => redis.get(keyFor(prefix, i)),
    set: () => (i) => redis.set(keyFor(prefix, i), VALUE),
    pipeline: (size) => async (i) => {
      const p = redis.pipeline();
      for (const c of mixed(size, i)) {
        if (c.set) p.set(keyFor(prefix, c.n), VALUE);
        else p.get(keyFor(prefix, c.n));
      }
      const replies = await p.exec();
      // ioredis puts per-command errors in the replies instead of rejecting; surface them.
      const failed = replies?.find(([err]) => err !== null);
      if (failed) throw new Error('pipeline command failed', { cause: failed[0] });
      return replies;
    },
  };
}

const ALL_WORKLOADS: Workload[] = [
  { name: 'get', commands: 1, op: (t) => t.get('') },
  { name: 'set', commands: 1, op: (t) => t.set('') },
  { name: 'pipeline10', commands: 10, op: (t) => t.pipeline(10) },
  { name: 'pipeline100', commands: 100, op: (t) => t.pipeline(100) },
];

/**
 * Keeps `concurrency` ops in flight for `durationMs`. Latencies go into a growable typed array
 * because millions of boxed numbers would make the GC part of the measurement.
 */
async function run(op: Op, concurrency: number, durationMs: number, commands: number): Promise<Cell> {
  let latencies = new Float64Array(1 << 16);
  let count = 0;
  let next = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      await op(next++);
      const dt = performance.now() - t0;
      if (count === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[count++] = dt;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = performance.now() - start;
  const sorted = latencies.subarray(0, count).sort();
  return { ops: count, commandsPerSec: (count * commands * 1000) / elapsed, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

function hasFunction<K extends string>(mod: unknown, key: K): mod is Record<K, (...args: unknown[]) => unknown> {
  return typeof mod === 'object' && mod !== null && key in mod && typeof (mod as Record<K, unknown>)[key] === 'function';
}

function isRunning(gw: unknown): gw is { url: string; close(): Promise<void> } {
  return typeof gw === 'object' && gw !== null && 'url' in gw && typeof gw.url === 'string' && hasFunction(gw, 'close');
}

/** The gateway of another checkout (`BENCH_BASELINE`), started in this process with `env`. */
async function startBaseline(dir: string, env: Record<string, string>): Promise<{ url: string; close(): Promise<void> }> {
  const config: unknown = await import(pathToFileURL(join(dir, 'gateway', 'config.ts')).href);
  const server: unknown = await import(pathToFileURL(join(dir, 'gateway', 'server.ts')).href);
  if (!hasFunction(config, 'loadConfig') || !hasFunction(server, 'startGateway')) {
    throw new Error(`BENCH_BASELINE=${dir}: expected gateway/config.ts exporting loadConfig and gateway/server.ts exporting startGateway`);
  }
  const gw = await server.startGateway(config.loadConfig(env));
  if (!isRunning(gw)) throw new Error(`BENCH_BASELINE=${dir}: startGateway did not return a running gateway`);
  return gw;
}

/** The cell of median throughput. */
function median(cells: Cell[]): Cell {
  const sorted = [...cells].sort((a, b) => a.commandsPerSec - b.commandsPerSec);
  const mid = sorted[Math.floor(sorted.length / 2)];
  if (!mid) throw new Error('no cells measured');
  return mid;
}

async function main(): Promise<number> {
  const concurrencies = envConcurrencies('1,8,32');
  const durationMs = envInt('BENCH_DURATION_MS', 3_000);
  const warmupMs = envInt('BENCH_WARMUP_MS', 500);
  const workloads = envWorkloads(ALL_WORKLOADS);
  const baselineDir = process.env['BENCH_BASELINE'];
  const rounds = baselineDir ? envInt('BENCH_ROUNDS', 3) : 1;

  const machine = machineDescription();
  say(`machine: ${machine}`);

  let redisServer: RedisProcess | undefined;
  let gateway: RunningGateway | undefined;
  let baseline: { url: string; close(): Promise<void> } | undefined;
  let direct: IORedis | undefined;
  const prefix = `bench:${randomUUID()}:`;
  try {
    let redisUrl = process.env['REDIS_URL'];
    if (redisUrl) {
      say(`using REDIS_URL ${redactUrl(redisUrl)}`);
    } else {
      say('starting redis-server on a free port (no persistence)');
      redisServer = await startRedisServer();
      redisUrl = redisServer.url;
      say(`redis-server ready at ${redisUrl}`);
    }

    const token = randomBytes(24).toString('base64url');
    const env = { REDIS_URL: redisUrl, GATEWAY_HOST: '127.0.0.1', GATEWAY_PORT: '0', GATEWAY_TOKEN: token, GATEWAY_LATENCY_MS: '0' };
    let config;
    try {
      config = loadConfig(env);
    } catch (err) {
      if (err instanceof ConfigError) throw new Error(`gateway config: ${err.message}`, { cause: err });
      throw err;
    }
    say('starting the gateway in this process (GATEWAY_LATENCY_MS=0)');
    gateway = await startGateway(config);
    say(`gateway ready at ${gateway.url}`);
    if (baselineDir) {
      say(`starting the baseline gateway of ${baselineDir} in this process, same settings`);
      baseline = await startBaseline(baselineDir, env);
      say(`baseline gateway ready at ${baseline.url}`);
    }

    // No auto-pipelining: each call must be one HTTP request, or the single-command rows would
    // measure batching instead of the gateway. No retries: a failure must stop the bench.
    const viaGateway = new Upstash({ url: gateway.url, token, enableAutoPipelining: false, enableTelemetry: false, retry: false });
    direct = new IORedis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0 });
    await direct.connect();
    const targets = { gateway: upstashTarget(viaGateway, prefix), direct: ioredisTarget(direct, prefix) };
    const viaBaseline = baseline ? upstashTarget(new Upstash({ url: baseline.url, token, enableAutoPipelining: false, enableTelemetry: false, retry: false }), prefix) : undefined;

    say(`seeding ${KEYSPACE} keys under ${prefix}* with ${VALUE.length}-byte values`);
    const seed = direct.pipeline();
    for (let i = 0; i < KEYSPACE; i++) seed.set(keyFor(prefix, i), VALUE);
    await seed.exec();

    const perCell = 1 + rounds * (viaBaseline ? 2 : 1);
    const cells = workloads.length * concurrencies.length * perCell;
    const clients = viaBaseline ? 3 : 2;
    say(
      `running ${workloads.map((w) => w.name).join(', ')} at concurrency ${concurrencies.join(', ')}: ` +
        `${cells} cells × ${durationMs} ms, plus ${warmupMs} ms warmup per workload and client (~${Math.ceil((cells * durationMs + workloads.length * clients * warmupMs) / 1000)} s)`,
    );
    const rows: string[][] = [];
    for (const w of workloads) {
      const ops = { gateway: w.op(targets.gateway), direct: w.op(targets.direct), baseline: viaBaseline ? w.op(viaBaseline) : undefined };
      const warmConcurrency = Math.max(...concurrencies);
      say(`${w.name}: warming up ${viaBaseline ? 'the three' : 'both'} clients`);
      await run(ops.gateway, warmConcurrency, warmupMs, w.commands);
      if (ops.baseline) await run(ops.baseline, warmConcurrency, warmupMs, w.commands);
      await run(ops.direct, warmConcurrency, warmupMs, w.commands);
      for (const c of concurrencies) {
        const ours: Cell[] = [];
        const theirs: Cell[] = [];
        for (let r = 0; r < rounds; r++) {
          // Alternate which goes first, so a drift in the machine's load favours neither.
          if (ops.baseline && r % 2 === 1) theirs.push(await run(ops.baseline, c, durationMs, w.commands));
          ours.push(await run(ops.gateway, c, durationMs, w.commands));
          if (ops.baseline && r % 2 === 0) theirs.push(await run(ops.baseline, c, durationMs, w.commands));
        }
        const g = median(ours);
        const d = await run(ops.direct, c, durationMs, w.commands);
        const row = [w.name, String(c), fmtInt(g.commandsPerSec), fmtMs(g.p50), fmtMs(g.p99)];
        if (ops.baseline) {
          const b = median(theirs);
          say(`${w.name} ×${c}: gateway ${fmtInt(g.commandsPerSec)} cmd/s, baseline ${fmtInt(b.commandsPerSec)} cmd/s, direct ${fmtInt(d.commandsPerSec)} cmd/s`);
          row.push(fmtInt(b.commandsPerSec), fmtMs(b.p50), fmtMs(b.p99), `${((g.commandsPerSec / b.commandsPerSec) * 100).toFixed(0)} %`);
        } else {
          say(`${w.name} ×${c}: gateway ${fmtInt(g.commandsPerSec)} cmd/s, direct ${fmtInt(d.commandsPerSec)} cmd/s`);
        }
        row.push(fmtInt(d.commandsPerSec), fmtMs(d.p50), fmtMs(d.p99), `${(d.commandsPerSec / g.commandsPerSec).toFixed(1)}×`);
        rows.push(row);
      }
    }

    const header = ['workload', 'concurrency', 'gateway cmd/s', 'p50 ms', 'p99 ms'];
    if (viaBaseline) header.push('baseline cmd/s', 'p50 ms', 'p99 ms', 'gateway / baseline');
    header.push('direct cmd/s', 'p50 ms', 'p99 ms', 'ratio');
    process.stdout.write(
      `\nMachine: ${machine}\n` +
        'Throughput is Redis commands per second (a pipeline of 100 counts 100); p50/p99 are the latency of one\n' +
        'call: one command, or one whole pipeline. Ratio = direct throughput / gateway throughput.\n' +
        (viaBaseline ? `Gateway and baseline (${baselineDir}): medians of ${rounds} alternating cells each; gateway / baseline = their throughputs.\n` : '') +
        '\n' +
        table(header, rows, 2) +
        '\n\n',
    );
    return 0;
  } finally {
    if (direct) {
      say(`deleting the ${KEYSPACE} keys under ${prefix}*`);
      const keys = Array.from({ length: KEYSPACE }, (_, i) => keyFor(prefix, i));
      await direct.del(...keys).catch((err: unknown) => say(`could not delete the bench keys: ${String(err)}`));
      direct.disconnect();
    }
    if (gateway) {
      say('stopping the gateway');
      await gateway.close();
    }
    if (baseline) {
      say('stopping the baseline gateway');
      await baseline.close();
    }
    if (redisServer) {
      say('stopping redis-server');
      await redisServer.stop();
    }
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: failed: ${err instanceof Error ? err.message : String(err)}\n`);
    if (err instanceof Error && err.cause instanceof Error) process.stderr.write(`bench:   cause: ${err.cause.message}\n`);
    process.exit(1);
  },
);
