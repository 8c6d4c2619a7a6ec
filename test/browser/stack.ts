/**
 * The whole local stack for the browser tests, started the way a user starts it: `npm run dev`
 * (scripts/dev.ts: D1 migrations, a redis-server of its own, the gateway, `wrangler dev`) on free
 * ports, its state in a temporary folder that is deleted afterwards. With one difference: APP_ENV as
 * wrangler.toml ships it, "production" (`npm run dev` says "development"), so the browser sees the
 * cookies a deploy sends, `__Host-` and `Secure`. Chromium keeps Secure cookies from
 * http://127.0.0.1 (a loopback origin is a secure context), so the shipped default is what these
 * tests check; the workers suite covers "development".
 * And Chromium: Debian's `chromium` (or `CHROMIUM_PATH`) driven by playwright-core, which never
 * downloads a browser. Without one, the run fails at once saying how to get it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { watchChild } from '../support/child-output.ts';
import { freePort } from '../support/redis-process.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
const HOW = "Install one (e.g. 'sudo apt-get install -y chromium') or set CHROMIUM_PATH to a Chromium or Chrome binary.";

export class ChromiumNotFoundError extends Error {
  override name = 'ChromiumNotFoundError';
}

/**
 * The Chromium binary to drive: `CHROMIUM_PATH`, else the first of {@link CANDIDATES} that exists,
 * checked by running it with `--version` (a fraction of a second). Throws
 * {@link ChromiumNotFoundError} saying how to get one, so the suite fails before starting anything.
 */
export function chromiumPath(): string {
  const given = process.env['CHROMIUM_PATH'];
  const path = given || CANDIDATES.find((p) => existsSync(p));
  if (!path) throw new ChromiumNotFoundError(`no Chromium found (looked for ${CANDIDATES.join(', ')}). ${HOW}`);
  const probe = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 15_000 });
  if (probe.error || probe.status !== 0 || !/\b(Chromium|Chrome)\b/.test(probe.stdout)) {
    const why = probe.error ? probe.error.message : `${path} --version answered ${JSON.stringify((probe.stdout || probe.stderr).trim().split('\n')[0]?.slice(0, 120) ?? '')} (exit ${probe.status})`;
    throw new ChromiumNotFoundError(`${given ? `CHROMIUM_PATH=${given}` : path} is not a working Chromium: ${why}. ${HOW}`, { cause: probe.error });
  }
  return path;
}

let found: string | undefined;

/** Headless Chromium with nothing of its own going online; a fresh profile every launch. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: (found ??= chromiumPath()),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export interface DevStack {
  url: string;
  /** The last 200 lines dev.ts and wrangler printed. */
  output: string[];
  stop(): Promise<void>;
}

/** `npm run dev` on free ports with its state in a temporary folder; resolves once it says "ready". */
export async function startDevStack(): Promise<DevStack> {
  const state = mkdtempSync(join(tmpdir(), 'edge-redis-browser-'));
  const [appPort, gatewayPort] = [await freePort(), await freePort()];
  const inherited = { ...process.env };
  for (const key of Object.keys(inherited)) if (/^(GATEWAY_|REDIS_URL$|ADMIN_TOKEN$)/.test(key)) delete inherited[key];
  const child: ChildProcess = spawn(process.execPath, [join(ROOT, 'scripts/dev.ts'), '--persist-to', state, '--port', String(appPort), '--var', 'API_RATE_LIMIT:100000', '--var', 'APP_ENV:production'], {
    cwd: ROOT,
    env: { ...inherited, GATEWAY_PORT: String(gatewayPort) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: false,
  });
  // The tail is what a failure message shows.
  const { output, exited, ready } = watchChild(child, 'npm run dev', (line) => (line.startsWith('dev: ready:') ? true : undefined), 120_000, 200);
  // A test process that exits without stopping the stack (a crash in setup) takes it along: dev.ts
  // stops its redis-server, gateway and wrangler on SIGTERM.
  const orphaned = () => child.kill('SIGTERM');
  process.once('exit', orphaned);
  const stop = async () => {
    process.off('exit', orphaned);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
    rmSync(state, { recursive: true, force: true });
  };
  const url = `http://127.0.0.1:${appPort}`;
  try {
    await ready;
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, output, stop };
}
