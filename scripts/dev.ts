/**
 * `npm run dev [-- --fresh] [-- <wrangler dev args>]`: the whole local stack in one command, no Docker.
 *
 * 0. `--fresh` (ours, not passed to wrangler): deletes the local state folder (.wrangler/state, or
 *    the `--persist-to` given), so D1 and Redis both start empty.
 * 1. D1: `wrangler d1 migrations apply DB --local` (schema + 1200 seeded products) into the local
 *    database under .wrangler/state, without a prompt; already applied migrations are skipped.
 * 2. Redis: `REDIS_URL` if set, else a redis-server on a free port that keeps its data beside D1's,
 *    in .wrangler/state/redis (append-only file, fsync every second; stopped with SIGTERM so it
 *    writes what it has), so a restart of `npm run dev` finds both as it left them.
 * 3. The REST gateway, in this process, on `GATEWAY_PORT` (default 8079) with a random token per
 *    run unless `GATEWAY_TOKEN` is set. Admin commands are allowed unless
 *    `GATEWAY_ALLOW_ADMIN_COMMANDS=false`, so FLUSHDB & co. work against the throwaway Redis.
 * 4. `wrangler dev` on 127.0.0.1:8787 with `--test-scheduled` (the cron handler fires on
 *    `/__scheduled`), the user's extra args appended (so `--var API_RATE_LIMIT:1000` works), and the
 *    secrets `UPSTASH_REDIS_REST_URL` / `UPSTASH_REDIS_REST_TOKEN` (this gateway) and `ADMIN_TOKEN`
 *    (from the environment, else random per run) in wrangler's environment, not its command line.
 *
 * Ready means `GET /healthz` answers 200; then the URLs are printed. Ctrl-C or SIGTERM stops
 * everything and exits 0; if wrangler exits on its own, the rest is stopped and its exit code is
 * ours. Tokens are never printed in full: each is written to a 0600 file under .wrangler/ that is
 * removed on exit.
 *
 * Why the environment: wrangler 4 reads a Worker's `[secrets] required` names from `process.env`
 * (unless a `.dev.vars` file exists, in which case it reads only that file), and a process's
 * environment is readable by its owner only, whereas `--var NAME:value` shows in everyone's `ps`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, redactUrl } from '../gateway/config.ts';
import { startGateway, type RunningGateway } from '../gateway/server.ts';
import { startRedisServer, type RedisProcess } from '../test/support/redis-process.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'node_modules', '.bin');
const tokenFile = path.join(root, '.wrangler', 'dev-gateway-token');
const adminTokenFile = path.join(root, '.wrangler', 'dev-admin-token');
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

/** Whether the user passed `--name`, `--name=v` or one of its aliases. */
function hasFlag(args: readonly string[], ...names: string[]): boolean {
  return args.some((a) => names.some((n) => a === n || a.startsWith(`${n}=`)));
}

function mask(secret: string): string {
  return `${secret.slice(0, 4)}… (${secret.length} chars)`;
}

/**
 * Writes a secret readable by its owner only. A file left by a crashed run is replaced rather than
 * rewritten, because `mode` applies only when a file is created.
 */
function writeSecretFile(file: string, secret: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  rmSync(file, { force: true });
  writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
}

// `npm run dev -- --x` strips the `--`; `node scripts/dev.ts -- --x` does not.
const allArgs = process.argv[2] === '--' ? process.argv.slice(3) : process.argv.slice(2);
/** `--fresh` is ours: start D1 and Redis empty. Everything else goes to wrangler. */
const fresh = allArgs.includes('--fresh');
const extraArgs = allArgs.filter((a) => a !== '--fresh');
/** Where wrangler keeps local state (D1), and where our Redis keeps its data. */
const stateDir = path.resolve(root, flagValue(extraArgs, '--persist-to') ?? path.join('.wrangler', 'state'));
const redisDir = path.join(stateDir, 'redis');
// Extra args win: when the user sets --ip or --port ours are left out, and the URL we print and poll follows theirs.
const ip = flagValue(extraArgs, '--ip') ?? '127.0.0.1';
const port = flagValue(extraArgs, '--port') ?? '8787';
const appUrl = `http://${ip.includes(':') ? `[${ip}]` : ip}:${port}`;

let redisServer: RedisProcess | undefined;
let gateway: RunningGateway | undefined;
let wrangler: ChildProcess | undefined;
/** `wrangler d1 migrations apply` while it runs. */
let migrating: ChildProcess | undefined;
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
    say('stopping redis-server (it writes its data out first)');
    await redisServer.stop().catch((err: unknown) => say(`redis-server did not stop cleanly: ${String(err)}`));
    redisServer = undefined;
  }
  rmSync(tokenFile, { force: true });
  rmSync(adminTokenFile, { force: true });
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

/**
 * The processes `pid` started, and theirs, children first (Linux's /proc; none elsewhere). `wrangler`
 * is a launcher that runs wrangler's CLI in a child process, which runs workerd: killing the
 * launcher alone with SIGKILL (it cannot forward that one) would leave both running, holding the
 * port. Read before the launcher dies, since its children are then re-parented and out of reach.
 */
function descendants(pid: number): number[] {
  const children: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      children.push(...readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    }
  } catch {
    return children; // not Linux, or the process is gone
  }
  return children.flatMap((child) => [...descendants(child), child]);
}

/** SIGKILL to `child` and every process under it. */
function killTree(child: ChildProcess): void {
  for (const pid of child.pid === undefined ? [] : descendants(child.pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
  child.kill('SIGKILL');
}

async function shutdown(signal: NodeJS.Signals): Promise<void> {
  if (stopping) return;
  stopping = true;
  say(`${signal} received, shutting down`);
  if (migrating && migrating.exitCode === null && migrating.signalCode === null) {
    say('stopping the D1 migration');
    migrating.kill('SIGTERM');
    await waitForExit(migrating, 5_000);
  }
  const child = wrangler;
  if (child && child.exitCode === null && child.signalCode === null) {
    say('stopping wrangler');
    child.kill('SIGTERM');
    if (!(await waitForExit(child, WRANGLER_STOP_GRACE_MS))) {
      say(`wrangler still running after ${WRANGLER_STOP_GRACE_MS / 1000} s, killing it (and workerd)`);
      killTree(child);
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

/** Polls `/healthz` until it answers 200; true once it does, false on timeout, stop or wrangler's exit. */
async function waitUntilReady(): Promise<boolean> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = '';
  while (!stopping && wrangler?.exitCode === null && Date.now() < deadline) {
    try {
      const res = await fetch(`${appUrl}/healthz`, { signal: AbortSignal.timeout(5_000) });
      const body = (await res.text()).slice(0, 200).replace(/\s+/g, ' ');
      if (res.ok) return !stopping;
      // Up but unhealthy (Redis unreachable?): say it once per distinct answer and keep polling.
      const seen = `${res.status} ${body}`;
      if (seen !== last && !stopping) say(`GET ${appUrl}/healthz → ${seen}; waiting for 200`);
      last = seen;
    } catch {
      // Not listening yet: wrangler is still bundling or starting workerd.
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  if (!stopping && wrangler?.exitCode === null) {
    say(`${appUrl}/healthz did not answer 200 within ${READY_TIMEOUT_MS / 1000} s${last ? ` (last: ${last})` : ''}; wrangler keeps running`);
  }
  return false;
}

/** Where the user's wrangler args put the local D1 state, config and environment, for the migration. */
function migrationArgs(): string[] {
  const forwarded: string[] = [];
  for (const [flag, ...aliases] of [['--persist-to'], ['--config', '-c'], ['--env', '-e']] as const) {
    for (const name of [flag, ...aliases]) {
      const value = flagValue(extraArgs, name);
      if (value !== undefined) {
        forwarded.push(flag, value);
        break;
      }
    }
  }
  return ['d1', 'migrations', 'apply', 'DB', '--local', ...forwarded];
}

/** Env for wrangler: Node 24 from node_modules first, no telemetry unless the user opts in. */
function wranglerEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    WRANGLER_SEND_METRICS: 'false',
    ...process.env,
    // Node 24 from node_modules first, so wrangler's `#!/usr/bin/env node` does not pick system Node 20.
    PATH: `${bin}${path.delimiter}${process.env['PATH'] ?? ''}`,
    ...extra,
  };
}

/**
 * Applies the D1 migrations to the local database. Wrangler asks for confirmation unless it runs
 * without a TTY or under CI; stdin is not a TTY here and CI=true covers the rest, so it never waits
 * for an answer. Its output (tables per migration) is kept and shown only when it fails.
 */
async function applyMigrations(): Promise<void> {
  const args = migrationArgs();
  say(`applying D1 migrations (schema + 1200 products)… (wrangler ${args.join(' ')})`);
  const output: string[] = [];
  const child = spawn(path.join(bin, 'wrangler'), args, {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: wranglerEnv({ CI: 'true' }),
  });
  migrating = child;
  child.stdout.on('data', (chunk: Buffer) => output.push(chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => output.push(chunk.toString('utf8')));
  const status = await new Promise<number | string>((resolve) => {
    child.once('error', (err) => resolve(err.message));
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  migrating = undefined;
  if (stopping) return;
  const text = output.join('');
  if (status !== 0) {
    process.stderr.write(text.endsWith('\n') || text === '' ? text : `${text}\n`);
    fail(`applying the D1 migrations failed (${typeof status === 'number' ? `exit code ${status}` : status}); wrangler's output is above`);
  }
  if (text.includes('No migrations to apply')) {
    say('D1 is up to date (no migrations to apply)');
  } else {
    const applied = [...new Set(text.match(/\b\d{4}_[\w.-]+\.sql\b/g) ?? [])];
    say(`D1 migrations applied: ${applied.length > 0 ? applied.join(', ') : 'done'}`);
  }
}

async function main(): Promise<void> {
  if (fresh) {
    say(`--fresh: deleting ${path.relative(process.cwd(), stateDir) || stateDir} (the local D1 database and Redis data)`);
    rmSync(stateDir, { recursive: true, force: true });
  }
  await applyMigrations();
  if (stopping) return;

  let redisUrl = process.env['REDIS_URL'];
  if (redisUrl) {
    say(`using Redis from REDIS_URL: ${redactUrl(redisUrl)}`);
  } else {
    const where = path.relative(process.cwd(), redisDir) || redisDir;
    say(`REDIS_URL is not set: starting redis-server on a free port, its data kept in ${where} (npm run dev -- --fresh starts it empty)`);
    const pending = startRedisServer({ dir: redisDir });
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
  writeSecretFile(tokenFile, token);
  say(`gateway ready at ${gateway.url}${config.allowAdminCommands ? ' (admin commands allowed)' : ''}`);
  say(
    process.env['GATEWAY_TOKEN']
      ? `gateway token: from GATEWAY_TOKEN (${mask(token)})`
      : `gateway token: random for this run (${mask(token)}); read it with: cat ${path.relative(process.cwd(), tokenFile)}`,
  );

  const envAdminToken = process.env['ADMIN_TOKEN'];
  const adminToken = envAdminToken || randomBytes(24).toString('base64url');
  writeSecretFile(adminTokenFile, adminToken);
  say(
    envAdminToken
      ? `ADMIN_TOKEN: from the environment (${mask(adminToken)})`
      : `ADMIN_TOKEN: random for this run (${mask(adminToken)}); read it with: cat ${path.relative(process.cwd(), adminTokenFile)}`,
  );
  if (stopping) return;

  // With a .dev.vars file wrangler reads secrets from that file alone and ignores process.env. Naming
  // it as an --env-file instead keeps its other entries and lets the environment (ours) win.
  // (`--env X` makes wrangler prefer .dev.vars.X, so the same choice is made here.)
  const targetEnv = flagValue(extraArgs, '--env') ?? flagValue(extraArgs, '-e');
  const devVars = [...(targetEnv ? [`.dev.vars.${targetEnv}`] : []), '.dev.vars'].find((f) => existsSync(path.join(root, f)));
  const envFileArgs = devVars !== undefined && !hasFlag(extraArgs, '--env-file') ? ['--env-file', devVars] : [];
  if (devVars !== undefined && envFileArgs.length > 0) {
    say(`${devVars} found: passing it as --env-file, so the secrets below override its entries of the same name`);
  }

  const args = [
    'dev',
    ...(flagValue(extraArgs, '--ip') === undefined ? ['--ip', ip] : []),
    ...(flagValue(extraArgs, '--port') === undefined ? ['--port', port] : []),
    ...envFileArgs,
    ...(extraArgs.includes('--test-scheduled') ? [] : ['--test-scheduled']),
    // wrangler.toml ships production (Secure `__Host-` cookies); the local stack is plain http.
    ...(extraArgs.some((a) => a.startsWith('APP_ENV:') || a.startsWith('--var=APP_ENV:')) ? [] : ['--var', 'APP_ENV:development']),
    ...extraArgs,
  ];
  say(`starting wrangler ${args.join(' ')}`);
  say('  secrets UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN and ADMIN_TOKEN go in its environment, not its arguments');
  wrangler = spawn(path.join(bin, 'wrangler'), args, {
    cwd: root,
    stdio: 'inherit',
    env: wranglerEnv({
      // Wrangler 4 reads `[secrets] required` names from process.env only while this is on (its
      // default); forced so a user's `false` cannot silently leave the Worker without them.
      CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV: 'true',
      UPSTASH_REDIS_REST_URL: gateway.url,
      UPSTASH_REDIS_REST_TOKEN: token,
      ADMIN_TOKEN: adminToken,
    }),
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
  if (!(await waitUntilReady())) return;
  const cron = `${appUrl}/__scheduled?cron=*+*+*+*+*`;
  say('ready:');
  say(`  app:     ${appUrl}  (GET ${appUrl}/healthz → 200)`);
  say(`  docs:    ${appUrl}/docs  (OpenAPI: ${appUrl}/openapi.json)`);
  say(`  gateway: ${gateway.url}`);
  say(`  cron:    curl "${cron}"  (runs scheduled(): flushes page views to D1)`);
  say('Ctrl-C stops everything.');
}

main().catch(async (err: unknown) => {
  process.stderr.write(`dev: failed: ${err instanceof Error ? err.message : String(err)}\n`);
  if (wrangler && wrangler.exitCode === null) wrangler.kill('SIGTERM');
  await stopServices();
  process.exit(1);
});
