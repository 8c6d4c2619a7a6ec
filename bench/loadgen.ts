/**
 * The HTTP load generators of `npm run bench:gateway:compare`, behind one call: `measure(gen, …)`
 * runs `conc` connections (one request in flight each) against one URL for a fixed time and returns
 * requests/s with p50/p99 latency, or throws when any request failed or answered non-2xx.
 *
 * - `autocannon` (npm, runs anywhere): its CLI with `-j`, JSON on stdout.
 * - `wrk` (C, when on PATH; `apt-get install wrk`): much cheaper per request than autocannon, which
 *   matters on a small machine where the load generator shares the cores with the servers it
 *   measures. POST bodies and headers are set by a Lua script, whose `done` hook prints one JSON
 *   line (wrk's text report is not parsed). `BENCH_WRK_THREADS` (default 1) threads.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './common.ts';

export type LoadGen = 'autocannon' | 'wrk';
export interface LoadRequest { method: 'GET' | 'POST'; path: string; body?: string; token: string }
export interface LoadResult { rps: number; p50: number; p99: number }

const wrkThreads = Number(process.env['BENCH_WRK_THREADS'] ?? 1);
if (!Number.isInteger(wrkThreads) || wrkThreads <= 0) throw new Error(`BENCH_WRK_THREADS must be a positive whole number, got "${process.env['BENCH_WRK_THREADS']}"`);

/** Runs `gen` for `seconds` and returns its rate and latencies; `tmp` is a scratch directory. */
export function measure(gen: LoadGen, url: string, req: LoadRequest, conc: number, seconds: number, tmp: string): LoadResult {
  return gen === 'wrk' ? wrk(url, req, conc, seconds, tmp) : autocannon(url, req, conc, seconds, tmp);
}

interface AutocannonJson { requests: { average: number }; latency: { p50: number; p99: number }; non2xx: number; errors: number }

function isAutocannonJson(v: unknown): v is AutocannonJson {
  return typeof v === 'object' && v !== null && 'requests' in v && 'latency' in v && 'non2xx' in v;
}

function autocannon(url: string, req: LoadRequest, conc: number, seconds: number, tmp: string): LoadResult {
  const args = ['-j', '-c', String(conc), '-d', String(seconds), '-m', req.method, '-H', `Authorization=Bearer ${req.token}`];
  if (req.body !== undefined) {
    // `-i <file>`, not `-b <body>`: the CLI mangles a `-b` body of nested arrays (every request a 400).
    const file = join(tmp, 'body.json');
    writeFileSync(file, req.body);
    args.push('-H', 'Content-Type=application/json', '-i', file);
  }
  args.push(url + req.path);
  const out = spawnSync(join(ROOT, 'node_modules/.bin/autocannon'), args, { encoding: 'utf8', maxBuffer: 16 * 2 ** 20 });
  if (out.error) throw new Error(`autocannon could not start (run npm install): ${out.error.message}`, { cause: out.error });
  if (out.status !== 0) throw new Error(`autocannon failed (${out.status}): ${out.stderr.slice(-500)}`);
  const parsed: unknown = JSON.parse(out.stdout);
  if (!isAutocannonJson(parsed)) throw new Error('autocannon printed JSON without requests/latency');
  if (parsed.non2xx > 0 || parsed.errors > 0) throw new Error(`${url + req.path}: ${parsed.non2xx} non-2xx, ${parsed.errors} errors`);
  return { rps: parsed.requests.average, p50: parsed.latency.p50, p99: parsed.latency.p99 };
}

interface WrkJson { requests: number; duration_us: number; p50_us: number; p99_us: number; errors: number; non2xx: number }

function isWrkJson(v: unknown): v is WrkJson {
  return typeof v === 'object' && v !== null && 'requests' in v && 'duration_us' in v && 'p99_us' in v && 'non2xx' in v;
}

/** The Lua script: request shape from JSON-encoded strings (valid Lua string literals), a JSON `done`. */
function wrkScript(req: LoadRequest, bodyFile: string | undefined): string {
  const lines = [
    `wrk.method = ${JSON.stringify(req.method)}`,
    `wrk.headers["Authorization"] = ${JSON.stringify(`Bearer ${req.token}`)}`,
  ];
  if (bodyFile !== undefined) {
    lines.push(
      `local f = assert(io.open(${JSON.stringify(bodyFile)}, "rb"))`,
      'wrk.body = f:read("*a")',
      'f:close()',
      'wrk.headers["Content-Type"] = "application/json"',
    );
  }
  lines.push(
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format(\'\\n{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"non2xx":%d}\\n\',',
    '    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),',
    '    e.connect + e.read + e.write + e.timeout, e.status))',
    'end',
  );
  return `${lines.join('\n')}\n`;
}

function wrk(url: string, req: LoadRequest, conc: number, seconds: number, tmp: string): LoadResult {
  let bodyFile: string | undefined;
  if (req.body !== undefined) {
    bodyFile = join(tmp, 'wrk-body.json');
    writeFileSync(bodyFile, req.body);
  }
  const script = join(tmp, 'wrk.lua');
  writeFileSync(script, wrkScript(req, bodyFile));
  const threads = Math.min(wrkThreads, conc);
  const out = spawnSync('wrk', ['-t', String(threads), '-c', String(conc), '-d', `${seconds}s`, '-s', script, url + req.path], { encoding: 'utf8', maxBuffer: 16 * 2 ** 20 });
  if (out.error) throw new Error(`wrk could not start: ${out.error.message}`, { cause: out.error });
  if (out.status !== 0) throw new Error(`wrk failed (${out.status}): ${(out.stderr || out.stdout).slice(-500)}`);
  const line = out.stdout.split('\n').reverse().find((l) => l.startsWith('{'));
  const parsed: unknown = line === undefined ? undefined : JSON.parse(line);
  if (!isWrkJson(parsed)) throw new Error(`wrk printed no result line: ${out.stdout.slice(-300)}`);
  // wrk counts status ≥ 400 in errors.status; a 3xx would also be wrong here but wrk does not count it.
  if (parsed.non2xx > 0 || parsed.errors > 0) throw new Error(`${url + req.path}: ${parsed.non2xx} non-2xx, ${parsed.errors} socket errors`);
  return { rps: parsed.requests / (parsed.duration_us / 1e6), p50: parsed.p50_us / 1000, p99: parsed.p99_us / 1000 };
}
