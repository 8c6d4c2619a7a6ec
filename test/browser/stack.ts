/**
 * The whole local stack for the browser tests, started the way a user starts it: `npm run dev`
 * (scripts/dev.ts: D1 migrations, a redis-server of its own, the gateway, `wrangler dev` with
 * APP_ENV=development) on free ports, its state in a temporary folder that is deleted afterwards.
 * And Chromium: Debian's `chromium` (or `CHROMIUM_PATH`) driven by playwright-core, which never
 * downloads a browser. Without one, the run fails at once saying how to get it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { freePort } from '../support/redis-process.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

/** The Chromium binary to drive, or an error saying how to get one. */
export function chromiumPath(): string {
  const given = process.env['CHROMIUM_PATH'];
  if (given) {
    if (!existsSync(given)) throw new Error(`CHROMIUM_PATH=${given} does not exist`);
    return given;
  }
  const found = CANDIDATES.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`no Chromium found (looked for ${CANDIDATES.join(', ')}). Install one (e.g. 'sudo apt-get install -y chromium') or set CHROMIUM_PATH to a Chromium or Chrome binary.`);
  }
  return found;
}

/** Headless Chromium with nothing of its own going online; a fresh profile every launch. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export interface DevStack {
  url: string;
  output: string[];
  stop(): Promise<void>;
}

/** `npm run dev` on free ports with its state in a temporary folder; resolves once it says "ready". */
export async function startDevStack(): Promise<DevStack> {
  const state = mkdtempSync(join(tmpdir(), 'edge-redis-browser-'));
  const [appPort, gatewayPort] = [await freePort(), await freePort()];
  const inherited = { ...process.env };
  for (const key of Object.keys(inherited)) if (/^(GATEWAY_|REDIS_URL$|ADMIN_TOKEN$)/.test(key)) delete inherited[key];
  const child: ChildProcess = spawn(process.execPath, [join(ROOT, 'scripts/dev.ts'), '--persist-to', state, '--port', String(appPort), '--var', 'API_RATE_LIMIT:100000'], {
    cwd: ROOT,
    env: { ...inherited, GATEWAY_PORT: String(gatewayPort) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: false,
  });
  const output: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = `http://127.0.0.1:${appPort}`;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm run dev did not get ready in 120 s:\n${output.slice(-30).join('\n')}`)), 120_000);
    const onData = (chunk: Buffer) => {
      output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      if (output.some((l) => l.startsWith('dev: ready:'))) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`npm run dev exited (${code}) before it was ready:\n${output.slice(-30).join('\n')}`));
    });
  });
  return {
    url,
    output,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
      rmSync(state, { recursive: true, force: true });
    },
  };
}
