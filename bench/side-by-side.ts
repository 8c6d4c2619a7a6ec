/**
 * `npm run bench:gateway:compare`: the gateway beside a floor, webdis and redis-benchmark, each
 * server in its own process, against one private redis-server, measured by autocannon and wrk.
 *
 * Servers (each a child process, so none shares an event loop with the load generator or another):
 * - `gateway`: `node gateway/main.ts` (GATEWAY_LATENCY_MS=0)
 * - `gateway-workers`: the same with GATEWAY_WORKERS=BENCH_GATEWAY_WORKERS (webdis gets as many threads)
 * - `floor`: bench/floor-proxy.ts, node:http + ioredis with nothing else: what Node + ioredis cost
 * - `webdis`: when on PATH, single GET only (`GET /GET/<key>`)
 * - `redis-benchmark`: when on PATH, direct TCP GET at -P 1 and -P 100 (c=32), no HTTP at all
 * The load generators (bench/loadgen.ts), one child per cell: the autocannon CLI (npm, runs anywhere)
 * and wrk when on PATH (C, far cheaper per request, so on a small machine more of the cores are left
 * to the servers). Each row says which one measured it; ratios compare rows of the same generator.
 *
 * Environment: `BENCH_DURATION_S` (default 5) per cell, `BENCH_CONCURRENCY` (default `1,8,32`),
 * `BENCH_GATEWAY_WORKERS` (default 2): GATEWAY_WORKERS of `gateway-workers` and webdis's threads,
 * `BENCH_WARMUP_S` (default 2) unmeasured load per server and workload first,
 * `BENCH_ROUNDS` (default 1) alternating rounds per cell, the median kept (use 3+ on a busy machine),
 * `BENCH_WORKLOADS` (subset of `get,pipeline10,pipeline100,multiexec10`), `BENCH_CPU_PROF=<dir>`
 * runs the gateway under `node --cpu-prof --cpu-prof-dir=<dir>` (profile written on exit),
 * `BENCH_LOADGEN` (default `autocannon,wrk`, wrk dropped when not on PATH), `BENCH_WRK_THREADS` (1).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort, startRedisServer } from '../test/support/redis-process.ts';
import { envConcurrencies, envPick, envWorkloads, fmtInt, fmtMs, machineDescription, ROOT, say, table } from './common.ts';
import { measure, type LoadGen, type LoadRequest } from './loadgen.ts';

const TOKEN = 'bench-token';
const KEY = 'bench:sbs:k';
const LOADGENS: readonly LoadGen[] = ['autocannon', 'wrk'];
const duration = Number(process.env['BENCH_DURATION_S'] ?? 5);
if (!Number.isFinite(duration) || duration <= 0) throw new Error(`BENCH_DURATION_S must be a positive number, got "${process.env['BENCH_DURATION_S']}"`);
/** GATEWAY_WORKERS of the second gateway, and webdis's thread count: the same for both. */
const workers = Number(process.env['BENCH_GATEWAY_WORKERS'] ?? 2);
if (!Number.isInteger(workers) || workers < 2) throw new Error(`BENCH_GATEWAY_WORKERS must be a whole number ≥ 2, got "${process.env['BENCH_GATEWAY_WORKERS']}"`);
/** Unmeasured load per server before each workload, so V8 has compiled the hot path (cold, a Node
 * server runs at about half speed for its first second or two; webdis and redis have nothing to warm). */
const warmup = Number(process.env['BENCH_WARMUP_S'] ?? 2);
if (!Number.isFinite(warmup) || warmup < 0) throw new Error(`BENCH_WARMUP_S must be a number ≥ 0, got "${process.env['BENCH_WARMUP_S']}"`);
const rounds = Number(process.env['BENCH_ROUNDS'] ?? 1);
if (!Number.isInteger(rounds) || rounds <= 0) throw new Error(`BENCH_ROUNDS must be a positive whole number, got "${process.env['BENCH_ROUNDS']}"`);

type ServerName = 'gateway' | 'gateway-workers' | 'floor' | 'webdis';
interface Server { name: ServerName; url: string; child: ChildProcess }
/** What a workload asks of one server; the token is added where it is sent. */
type Request = Omit<LoadRequest, 'token'>;
interface Workload { name: string; commands: number; request(server: ServerName): Request | undefined }
interface Row { server: string; loadgen: string; workload: string; conc: number; rps: number; cps: number; p50: number; p99: number }

const gets = (n: number) => JSON.stringify(Array.from({ length: n }, () => ['GET', KEY]));
const WORKLOADS: Workload[] = [
  {
    name: 'get', commands: 1,
    request: (s) => (s === 'webdis' ? { method: 'GET', path: `/GET/${KEY}` } : { method: 'POST', path: '/', body: JSON.stringify(['GET', KEY]) }),
  },
  { name: 'pipeline10', commands: 10, request: (s) => (s === 'webdis' ? undefined : { method: 'POST', path: '/pipeline', body: gets(10) }) },
  { name: 'pipeline100', commands: 100, request: (s) => (s === 'webdis' ? undefined : { method: 'POST', path: '/pipeline', body: gets(100) }) },
  { name: 'multiexec10', commands: 10, request: (s) => (s === 'gateway' ? { method: 'POST', path: '/multi-exec', body: gets(10) } : undefined) },
];

function onPath(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

/** Spawns a server and waits until `url` answers any HTTP status. */
async function startServer(name: ServerName, cmd: string, args: string[], env: NodeJS.ProcessEnv, url: string): Promise<Server> {
  say(`starting ${name}: ${cmd} ${args.join(' ')}`);
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with code ${child.exitCode} before it listened`);
    try {
      await fetch(url, { signal: AbortSignal.timeout(500) });
      say(`${name} listening on ${url} (pid ${child.pid})`);
      return { name, url, child };
    } catch {
      await sleep(100);
    }
  }
  child.kill('SIGKILL');
  throw new Error(`${name} did not listen on ${url} within 10 s`);
}

async function stopServer(s: Server): Promise<void> {
  if (s.child.exitCode !== null) return;
  const exited = new Promise((resolve) => s.child.once('exit', resolve));
  s.child.kill('SIGTERM');
  await Promise.race([exited, sleep(5_000).then(() => s.child.kill('SIGKILL'))]);
}

/** redis-benchmark GET at `pipeline` depth, c=32: requests/s (= commands/s) and p50/p99 ms. */
function redisBenchmark(port: number, pipeline: number): Row {
  const n = pipeline === 1 ? 200_000 : 2_000_000;
  say(`redis-benchmark -t get -c 32 -P ${pipeline} -n ${n}`);
  const out = spawnSync('redis-benchmark', ['-h', '127.0.0.1', '-p', String(port), '-q', '--csv', '-t', 'get', '-c', '32', '-P', String(pipeline), '-n', String(n)], { encoding: 'utf8' });
  // --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  const line = out.stdout.split('\n').find((l) => l.startsWith('"GET"'));
  const cells = line?.split(',').map((c) => Number(c.replaceAll('"', '')));
  if (cells === undefined || cells.length < 7) throw new Error(`could not parse redis-benchmark output: ${out.stdout.slice(0, 300)}`);
  const cps = cells[1] ?? Number.NaN;
  return { server: 'redis-benchmark (TCP)', loadgen: '', workload: pipeline === 1 ? 'get' : `pipeline${pipeline}`, conc: 32, rps: cps / pipeline, cps, p50: cells[4] ?? Number.NaN, p99: cells[6] ?? Number.NaN };
}

async function main(): Promise<void> {
  const concs = envConcurrencies('1,8,32');
  const gens = envLoadGens();
  const workloads = envWorkloads(WORKLOADS);
  say(`machine: ${machineDescription()}; ${duration} s per cell; other processes on this machine add noise`);
  const redisProc = await startRedisServer();
  say(`redis-server on ${redisProc.url}`);
  const client = new Redis(redisProc.url);
  await client.set(KEY, 'v'.repeat(100));
  client.disconnect();

  const tmp = mkdtempSync(join(tmpdir(), 'bench-sbs-'));
  const servers: Server[] = [];
  const rows: Row[] = [];
  try {
    const gwPort = await freePort();
    const prof = process.env['BENCH_CPU_PROF'];
    const nodeArgs = prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : [];
    servers.push(await startServer('gateway', process.execPath, [...nodeArgs, join(ROOT, 'gateway/main.ts')], {
      GATEWAY_TOKEN: TOKEN, GATEWAY_PORT: String(gwPort), GATEWAY_HOST: '127.0.0.1', REDIS_URL: redisProc.url, GATEWAY_LATENCY_MS: '0',
    }, `http://127.0.0.1:${gwPort}`));
    const gwwPort = await freePort();
    servers.push(await startServer('gateway-workers', process.execPath, [join(ROOT, 'gateway/main.ts')], {
      GATEWAY_TOKEN: TOKEN, GATEWAY_PORT: String(gwwPort), GATEWAY_HOST: '127.0.0.1', REDIS_URL: redisProc.url, GATEWAY_LATENCY_MS: '0', GATEWAY_WORKERS: String(workers),
    }, `http://127.0.0.1:${gwwPort}`));
    const floorPort = await freePort();
    servers.push(await startServer('floor', process.execPath, [join(ROOT, 'bench/floor-proxy.ts')], {
      REDIS_URL: redisProc.url, FLOOR_PORT: String(floorPort),
    }, `http://127.0.0.1:${floorPort}`));
    if (onPath('webdis')) {
      const webdisPort = await freePort();
      const conf = join(tmp, 'webdis.json');
      writeFileSync(conf, JSON.stringify({
        redis_host: '127.0.0.1', redis_port: redisProc.port, http_host: '127.0.0.1', http_port: webdisPort,
        threads: workers, daemonize: false, verbosity: 0, logfile: join(tmp, 'webdis.log'),
      }));
      servers.push(await startServer('webdis', 'webdis', [conf], {}, `http://127.0.0.1:${webdisPort}`));
    } else say('webdis not on PATH: skipped');

    for (const gen of gens) {
      for (const w of workloads) {
        if (warmup > 0) {
          const top = Math.max(...concs);
          for (const s of servers) {
            const req = w.request(s.name);
            if (req === undefined) continue;
            say(`${s.name} ${w.name}: warming up, ${gen} c=${top} for ${warmup} s (not measured)`);
            measure(gen, s.url, { ...req, token: TOKEN }, top, warmup, tmp);
          }
        }
        for (const conc of concs) {
          // Rounds alternate the servers (A B C A B C …) and each server's median round is kept, so
          // a burst of other work on this machine skews one round of one server, not the ratio.
          const runs = new Map<string, Row[]>();
          for (let round = 1; round <= rounds; round++) {
            for (const s of servers) {
              const req = w.request(s.name);
              if (req === undefined) continue;
              say(`${s.name} ${w.name} c=${conc}: ${gen} ${duration} s${rounds > 1 ? ` (round ${round}/${rounds})` : ''}`);
              const r = measure(gen, s.url, { ...req, token: TOKEN }, conc, duration, tmp);
              const row: Row = { server: s.name, loadgen: gen, workload: w.name, conc, rps: r.rps, cps: r.rps * w.commands, p50: r.p50, p99: r.p99 };
              runs.set(s.name, [...(runs.get(s.name) ?? []), row]);
            }
          }
          for (const list of runs.values()) {
            const sorted = [...list].sort((a, b) => a.rps - b.rps);
            const median = sorted[Math.floor((sorted.length - 1) / 2)];
            if (median) rows.push({ ...median, p99: [...list].map((r) => r.p99).sort((a, b) => a - b)[Math.floor((list.length - 1) / 2)] ?? median.p99 });
          }
        }
      }
    }
    if (onPath('redis-benchmark')) {
      if (workloads.some((w) => w.name === 'get')) rows.push(redisBenchmark(redisProc.port, 1));
      if (workloads.some((w) => w.name === 'pipeline100')) rows.push(redisBenchmark(redisProc.port, 100));
    } else say('redis-benchmark not on PATH: skipped');
  } finally {
    for (const s of servers) await stopServer(s);
    await redisProc.stop();
    rmSync(tmp, { recursive: true, force: true });
  }

  const find = (server: string, loadgen: string, workload: string, conc: number) =>
    rows.find((r) => r.server === server && r.loadgen === loadgen && r.workload === workload && r.conc === conc);
  const ratio = (a: number, b: number | undefined) => (b === undefined || b === 0 ? '' : `${(a / b).toFixed(2)}×`);
  const body = rows.map((r) => [
    r.server, r.loadgen, r.workload, String(r.conc), fmtInt(r.rps), fmtInt(r.cps), fmtMs(r.p50), fmtMs(r.p99),
    r.server === 'floor' || r.loadgen === '' ? '' : ratio(r.cps, find('floor', r.loadgen, r.workload, r.conc)?.cps),
    r.workload === 'get' && r.server !== 'webdis' && r.loadgen !== '' ? ratio(r.cps, find('webdis', r.loadgen, 'get', r.conc)?.cps) : '',
  ]);
  say('done; ratios are cmd/s over the floor (same generator, workload and c) and over webdis (single GET)');
  process.stdout.write(`\n${table(['server', 'load', 'workload', 'conc', 'req/s', 'cmd/s', 'p50 ms', 'p99 ms', '/ floor', '/ webdis'], body, 3)}\n`);

  for (const gen of gens) {
    const gwGet = find('gateway', gen, 'get', 32), flGet = find('floor', gen, 'get', 32);
    const gw100 = find('gateway', gen, 'pipeline100', 32), fl100 = find('floor', gen, 'pipeline100', 32);
    const targets: string[] = [];
    if (gwGet && flGet) {
      targets.push(`single GET c=32: gateway ${((100 * gwGet.rps) / flGet.rps).toFixed(0)}% of floor req/s (target ≥ 80%)`);
      targets.push(`p99 c=32: gateway ${(gwGet.p99 / flGet.p99).toFixed(2)}× floor (target ≤ 1.2×)`);
    }
    const gwwGet = find('gateway-workers', gen, 'get', 32), wdGet = find('webdis', gen, 'get', 32);
    if (gwwGet && wdGet) targets.push(`single GET c=32, GATEWAY_WORKERS=${workers}: ${((100 * gwwGet.rps) / wdGet.rps).toFixed(0)}% of webdis with ${workers} threads (target ≥ 50%)`);
    if (gw100 && fl100) targets.push(`pipeline100 c=32: gateway ${((100 * gw100.cps) / fl100.cps).toFixed(0)}% of floor cmd/s (target ≥ 100%)`);
    for (const t of targets) say(`${gen}: ${t}`);
  }
}

/** `BENCH_LOADGEN`: the generators to use, in order; wrk is dropped (with a line) when not on PATH. */
function envLoadGens(): LoadGen[] {
  const gens = envPick('BENCH_LOADGEN', LOADGENS);
  if (gens.includes('wrk') && !onPath('wrk')) {
    say('wrk not on PATH (apt-get install wrk): skipped');
    return gens.filter((g) => g !== 'wrk');
  }
  return gens;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
