/**
 * What the benchmarks that run Workers share: everything they start is registered and stopped once,
 * in reverse order (at the end, on a failure, or on Ctrl-C / SIGTERM), and the wrangler commands
 * they run (a one-off command, `wrangler dev` of a bundle until `/healthz` answers 200).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/support/redis-process.ts';
import { say } from './common.ts';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'node_modules', '.bin');
const READY_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Everything started is registered here and stopped once, in reverse order, by whichever comes
// first: the end of main, a failure, or Ctrl-C / SIGTERM.

const stops: { what: string; stop: () => Promise<void> }[] = [];
let stopped: Promise<void> | undefined;
let interrupted = false;

async function stopOne(what: string, stop: () => Promise<void>): Promise<void> {
  say(`stopping ${what}`);
  await stop().catch((err: unknown) => say(`${what} did not stop cleanly: ${err instanceof Error ? err.message : String(err)}`));
}

/**
 * Registers a stop; the returned function unregisters it (for things that ended by themselves).
 * Something started while everything is being stopped (a spawn already under way when Ctrl-C
 * came) is stopped at once.
 */
export function onStop(what: string, stop: () => Promise<void>): () => void {
  if (stopped) {
    void stopOne(what, stop);
    return () => undefined;
  }
  const entry = { what, stop };
  stops.push(entry);
  return () => {
    const i = stops.indexOf(entry);
    if (i >= 0) stops.splice(i, 1);
  };
}

export function stopAll(): Promise<void> {
  stopped ??= (async () => {
    for (const { what, stop } of stops.splice(0).reverse()) await stopOne(what, stop);
  })();
  return stopped;
}

/** Thrown at the next step once Ctrl-C came, so main starts nothing new. */
export class Interrupted extends Error {
  override name = 'Interrupted';
}

/** Whether Ctrl-C / SIGTERM came (the signal handler is then stopping everything). */
export function interruptedNow(): boolean {
  return interrupted;
}

export function checkInterrupted(): void {
  if (interrupted) throw new Interrupted('interrupted');
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    say(`${signal} received, stopping`);
    // Shell convention for death by signal: 130 for SIGINT, 143 for SIGTERM.
    void stopAll().then(() => process.exit(128 + os.constants.signals[signal]));
  });
}

// ---------------------------------------------------------------------------------------------
// wrangler

function wranglerEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    WRANGLER_SEND_METRICS: 'false',
    ...process.env,
    // Node 24 from node_modules first, so wrangler's `#!/usr/bin/env node` does not pick system Node 20.
    PATH: `${bin}${path.delimiter}${process.env['PATH'] ?? ''}`,
    // Wrangler reads `[secrets] required` from process.env only while this is on (its default).
    CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV: 'true',
    ...extra,
  };
}

export function exitOf(child: ChildProcess): Promise<number | string> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode ?? child.signalCode ?? 'unknown');
    child.once('error', (err) => resolve(err.message));
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
}

/** Keeps the last lines a child printed, to show them if it fails. */
export function captureOutput(child: ChildProcess, keep = 40): string[] {
  const lines: string[] = [];
  const push = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.trim() !== ''));
    lines.splice(0, Math.max(0, lines.length - keep));
  };
  child.stdout?.on('data', push);
  child.stderr?.on('data', push);
  return lines;
}

export async function stopChild(child: ChildProcess): Promise<void> {
  // No pid: it never started (spawn failed), so there is nothing to stop or wait for.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await exitOf(child);
  clearTimeout(timer);
}

/** Runs a short wrangler command to completion and answers its stdout; throws with its output when it fails. */
export async function wrangler(args: string[], what: string, env: Record<string, string> = {}): Promise<string> {
  // No TTY (stdin ignored) and CI=true: wrangler takes the default answer of any prompt
  // (`d1 migrations apply` asks "continue?") instead of waiting for one.
  checkInterrupted();
  const child = spawn(path.join(bin, 'wrangler'), args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: wranglerEnv({ CI: 'true', ...env }) });
  const output = captureOutput(child);
  const stdout: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
  const forget = onStop(what, () => stopChild(child));
  const status = await exitOf(child);
  forget();
  checkInterrupted();
  if (status !== 0) throw new Error(`${what} failed (${status}): wrangler ${args.join(' ')}\n${output.join('\n')}`);
  return Buffer.concat(stdout).toString('utf8');
}

export interface Worker {
  name: string;
  url: string;
  /** Stops this `wrangler dev` now (otherwise it is stopped with everything else). */
  stop(): Promise<void>;
}

/** `wrangler dev` of a pre-built bundle; resolves once `GET /healthz` answers 200. */
export async function startWorker(name: string, opts: { config: string; script: string; persistTo: string; envFile: string; secrets: Record<string, string>; vars?: Record<string, string>; }): Promise<Worker> {
  const port = await freePort();
  const inspector = await freePort();
  checkInterrupted();
  const args = [
    'dev', opts.script, '--no-bundle',
    '--config', opts.config,
    '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspector),
    '--persist-to', opts.persistTo,
    // An empty env file: the user's .dev.vars must not replace the secrets given below.
    '--env-file', opts.envFile,
    ...Object.entries(opts.vars ?? {}).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
    // Per-request log lines would cost CPU on the same cores as the Workers.
    '--log-level', 'warn',
    '--show-interactive-dev-session=false',
  ];
  const child = spawn(path.join(bin, 'wrangler'), args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: wranglerEnv(opts.secrets) });
  const output = captureOutput(child);
  // A spawn failure ends the wait below (the child never runs); its message joins the output.
  let spawnFailed = false;
  child.once('error', (err) => {
    spawnFailed = true;
    output.push(`could not start wrangler: ${err.message}`);
  });
  const forget = onStop(`wrangler dev (${name})`, () => stopChild(child));
  const stop = async () => {
    forget();
    await stopChild(child);
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = 'no answer';
  while (Date.now() < deadline && child.exitCode === null && child.signalCode === null && !spawnFailed && !interrupted) {
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5_000) });
      const body = (await res.text()).slice(0, 200);
      if (res.ok) return { name, url, stop };
      last = `${res.status} ${body}`;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  checkInterrupted();
  throw new Error(`wrangler dev (${name}) was not ready (GET /healthz: ${last})\n${output.join('\n')}`);
}

