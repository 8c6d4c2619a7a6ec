/**
 * `npm run dev [-- <wrangler dev args>]`: the whole local stack in one command, no Docker.
 *
 * 1. Redis: `REDIS_URL` if set, else a throwaway redis-server on a free port (no persistence).
 * 2. The REST gateway, in this process, on `GATEWAY_PORT` (default 8079) with a random token per
 *    run unless `GATEWAY_TOKEN` is set. Admin commands are allowed unless
 *    `GATEWAY_ALLOW_ADMIN_COMMANDS=false`, so FLUSHDB & co. work against the throwaway Redis.
 * 3. `wrangler dev` on 127.0.0.1:8787 with the gateway's URL and token as the Worker's
 *    `UPSTASH_REDIS_REST_URL` / `UPSTASH_REDIS_REST_TOKEN`, and `--test-scheduled` so the cron
 *    handler can be fired with `curl http://127.0.0.1:8787/__scheduled`.
 *
 * Ctrl-C or SIGTERM stops all three and exits 0; if wrangler exits on its own, the rest is stopped
 * and its exit code is ours. The token is never printed: it is written to a 0600 file that is
 * removed on exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, redactUrl } from '../gateway/config.ts';
import { startGateway, type RunningGateway } from '../gateway/server.ts';
import { startRedisServer, type RedisProcess } from '../test/support/redis-process.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'node_modules', '.bin');
const tokenFile = path.join(root, '.wrangler', 'dev-gateway-token');
const READY_TIMEOUT_MS = 120_000;
const WRANGLER_STOP_GRACE_MS = 10_000;

function say(line: string): void {
  process.stdout.write(`dev: ${line}\n`);
}

function fail(line: string): never {
  process.stderr.write(`dev: ${line}\n`);
  process.exit(1);
}

/** Value of `--name v` or `--name=v` among the user's extra wrangler args, if given. */
function flagValue(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === name) return args[i + 1];
    if (arg?.startsWith(`${name}=`)) return arg.slice(name.length + 1);
  }
  return undefined;
}

function mask(secret: string): string {
  return `${secret.slice(0, 4)}… (${secret.length} chars)`;
}

// `npm run dev -- --x` strips the `--`; `node scripts/dev.ts -- --x` does not.
const extraArgs = process.argv[2] === '--' ? process.argv.slice(3) : process.argv.slice(2);
// Extra args win: when the user sets --ip or --port ours are left out, and the URL we print and poll follows theirs.
const ip = flagValue(extraArgs, '--ip') ?? '127.0.0.1';
const port = flagValue(extraArgs, '--port') ?? '8787';
const appUrl = `http://${ip.includes(':') ? `[${ip}]` : ip}:${port}`;

let redisServer: RedisProcess | undefined;
let gateway: RunningGateway | undefined;
let wrangler: ChildProcess | undefined;
let stopping = false;
/** What is being started right now, so a signal during startup still stops it once it is up. */
let starting: Promise<unknown> | undefined;

async function stopServices(): Promise<void> {
  await starting?.catch(() => undefined);
  if (gateway) {
    say('stopping the gateway');
    await gateway.close().catch((err: unknown) => say(`gateway did not close cleanly: ${String(err)}`));
    gateway = undefined;
  }
  if (redisServer) {
    say('stopping redis-server');
    await redisServer.stop().catch((err: unknown) => say(`redis-server did not stop cleanly: ${String(err)}`));
    redisServer = undefined;
  }
  rmSync(tokenFile, { force: true });
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function shutdown(signal: NodeJS.Signals): Promise<void> {
  if (stopping) return;
  stopping = true;
  say(`${signal} received, shutting down`);
  const child = wrangler;
  if (child && child.exitCode === null && child.signalCode === null) {
    say('stopping wrangler');
    child.kill('SIGTERM');
    if (!(await waitForExit(child, WRANGLER_STOP_GRACE_MS))) {
      say(`wrangler still running after ${WRANGLER_STOP_GRACE_MS / 1000} s, killing it`);
      child.kill('SIGKILL');
      await waitForExit(child, 2_000);
    }
  }
  await stopServices();
  say('stopped');
  process.exit(0);
}

// Registered before anything starts, so a Ctrl-C during startup still cleans up what exists.
process.on('SIGINT', (s) => void shutdown(s));
process.on('SIGTERM', (s) => void shutdown(s));

async function waitUntilReady(): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!stopping && wrangler?.exitCode === null && Date.now() < deadline) {
    try {
      const res = await fetch(`${appUrl}/healthz`, { signal: AbortSignal.timeout(5_000) });
      const body = (await res.text()).slice(0, 200).replace(/\s+/g, ' ');
      if (stopping) return;
      say(`GET ${appUrl}/healthz → ${res.status} ${body}`);
      say(res.ok ? 'ready' : 'ready, but /healthz does not answer 200: see the line above');
      return;
    } catch {
      // Not listening yet: wrangler is still bundling or starting workerd.
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  if (!stopping && wrangler?.exitCode === null) {
    say(`${appUrl}/healthz did not answer within ${READY_TIMEOUT_MS / 1000} s; wrangler keeps running`);
  }
}

async function main(): Promise<void> {
  let redisUrl = process.env['REDIS_URL'];
  if (redisUrl) {
    say(`using Redis from REDIS_URL: ${redactUrl(redisUrl)}`);
  } else {
    say('REDIS_URL is not set: starting redis-server on a free port (no persistence)');
    const pending = startRedisServer();
    starting = pending;
    redisServer = await pending;
    redisUrl = redisServer.url;
    say(`redis-server ready at ${redisUrl}`);
  }
  if (stopping) return;

  const token = process.env['GATEWAY_TOKEN'] ?? randomBytes(24).toString('base64url');
  let config;
  try {
    config = loadConfig({
      ...process.env,
      REDIS_URL: redisUrl,
      GATEWAY_PORT: process.env['GATEWAY_PORT'] ?? '8079',
      GATEWAY_TOKEN: token,
      GATEWAY_ALLOW_ADMIN_COMMANDS: process.env['GATEWAY_ALLOW_ADMIN_COMMANDS'] ?? 'true',
    });
  } catch (err) {
    await stopServices();
    if (err instanceof ConfigError) fail(`gateway configuration: ${err.message}`);
    throw err;
  }
  say(`starting the gateway on ${config.host}:${config.port}`);
  try {
    const pending = startGateway(config);
    starting = pending;
    gateway = await pending;
  } catch (err) {
    await stopServices();
    const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
    if (code === 'EADDRINUSE') fail(`port ${config.port} is already in use: set GATEWAY_PORT to another port`);
    fail(`the gateway could not start: ${err instanceof Error ? err.message : String(err)}`);
  }
  mkdirSync(path.dirname(tokenFile), { recursive: true });
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  say(`gateway ready at ${gateway.url}${config.allowAdminCommands ? ' (admin commands allowed)' : ''}`);
  say(
    process.env['GATEWAY_TOKEN']
      ? `gateway token: from GATEWAY_TOKEN (${mask(token)})`
      : `gateway token: random for this run (${mask(token)}), in ${path.relative(process.cwd(), tokenFile)}`,
  );
  if (stopping) return;

  const args = [
    'dev',
    ...(flagValue(extraArgs, '--ip') === undefined ? ['--ip', ip] : []),
    ...(flagValue(extraArgs, '--port') === undefined ? ['--port', port] : []),
    '--var',
    `UPSTASH_REDIS_REST_URL:${gateway.url}`,
    '--var',
    `UPSTASH_REDIS_REST_TOKEN:${token}`,
    ...(extraArgs.includes('--test-scheduled') ? [] : ['--test-scheduled']),
    ...extraArgs,
  ];
  const shown = args.map((a) => (a.startsWith('UPSTASH_REDIS_REST_TOKEN:') ? 'UPSTASH_REDIS_REST_TOKEN:***' : a));
  say(`starting wrangler ${shown.join(' ')}`);
  say(`app:     ${appUrl}  (health: ${appUrl}/healthz, cron: ${appUrl}/__scheduled)`);
  say(`gateway: ${gateway.url}`);
  wrangler = spawn(path.join(bin, 'wrangler'), args, {
    cwd: root,
    stdio: 'inherit',
    env: {
      WRANGLER_SEND_METRICS: 'false',
      ...process.env,
      // Node 24 from node_modules first, so wrangler's `#!/usr/bin/env node` does not pick system Node 20.
      PATH: `${bin}${path.delimiter}${process.env['PATH'] ?? ''}`,
      // The `--var`s above are what the Worker sees (they beat .dev.vars); these only satisfy
      // wrangler.toml's `[secrets] required` check, which otherwise warns they are missing.
      UPSTASH_REDIS_REST_URL: gateway.url,
      UPSTASH_REDIS_REST_TOKEN: token,
    },
  });
  wrangler.once('error', (err) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`dev: could not start wrangler: ${err.message}\n`);
    void stopServices().then(() => process.exit(1));
  });
  wrangler.once('exit', (code, signal) => {
    if (stopping) return;
    stopping = true;
    say(`wrangler exited by itself (${signal ?? `code ${code ?? '?'}`}); stopping the rest`);
    // Shell convention for a signal death, so `npm run dev` reports it the same way.
    const status = code ?? 128 + (signal ? constants.signals[signal] : 0);
    void stopServices().then(() => process.exit(status));
  });
  await waitUntilReady();
}

main().catch(async (err: unknown) => {
  process.stderr.write(`dev: failed: ${err instanceof Error ? err.message : String(err)}\n`);
  if (wrangler && wrangler.exitCode === null) wrangler.kill('SIGTERM');
  await stopServices();
  process.exit(1);
});
