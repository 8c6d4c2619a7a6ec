/**
 * `npm run test:package`: the package as its users get it. In a temporary directory:
 *
 * 1. `npm pack` (which builds dist/ through `prepack`) and a copy of examples/consumer, a Worker of
 *    its own that imports edge-redis by name;
 * 2. `npm install` of the tarball there (its dependencies come from the registry or npm's cache);
 * 3. the consumer's `typecheck` (tsc, strict, the package's .d.ts only; the README's "Use it in your
 *    Worker" example is checked with it, as src/readme-example.ts) and `build` (wrangler);
 * 4. a private redis-server and the gateway started from the tarball's `edge-redis-gateway` bin,
 *    configured from the environment like `npm run gateway`, until its /healthz answers 200;
 * 5. the consumer's tests: its bundle in workerd (Miniflare) against that gateway.
 *
 * Before all that, it checks that the repository resolves `edge-redis/<entry>` alike everywhere:
 * wrangler.toml's [alias] names exactly the "edge-redis:source" of each entry of package.json's
 * "exports" (tsconfig.json and vitest.config.ts read "exports" itself).
 *
 * Nothing is written to the repository (the temporary directory is removed; KEEP=1 keeps it).
 * Exits non-zero at the first failing step, saying which.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startRedisServer } from '../test/support/redis-process.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const say = (line: string) => process.stdout.write(`[test:package] ${line}\n`);

/** Runs a command to completion, its output shown; rejects naming the step when it fails. */
function run(step: string, cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  say(`${step}: ${cmd} ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      process.stdout.write(chunk);
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => (code === 0 ? resolve(out) : reject(new Error(`${step} failed (${signal ?? `exit ${code}`})`))));
  });
}

/** Polls `url` until it answers 200; rejects after `ms`. */
async function until200(url: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url);
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer 200 within ${ms} ms (${last})`);
}

/** wrangler.toml's [alias] against package.json's "exports": the same entries, the same sources. */
function checkAliases(): void {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; exports: Record<string, Record<string, string>> };
  const toml = readFileSync(path.join(root, 'wrangler.toml'), 'utf8');
  const section = /^\[alias\]\n([\s\S]*?)(?:^\[|(?![\s\S]))/m.exec(toml)?.[1] ?? '';
  const aliases = Object.fromEntries([...section.matchAll(/^"([^"]+)"\s*=\s*"([^"]+)"/gm)].map((m) => [m[1]!, m[2]!]));
  const wanted = Object.fromEntries(Object.entries(pkg.exports).map(([sub, c]) => [sub === '.' ? pkg.name : `${pkg.name}/${sub.slice(2)}`, c['edge-redis:source']!]));
  const wrong = [...new Set([...Object.keys(aliases), ...Object.keys(wanted)])].filter((k) => aliases[k] !== wanted[k]);
  if (wrong.length) throw new Error(`wrangler.toml [alias] and package.json "exports" disagree on: ${wrong.join(', ')}`);
  say(`wrangler.toml [alias] matches the ${Object.keys(wanted).length} entries of package.json "exports"`);
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'edge-redis-package-'));
const stops: (() => Promise<void>)[] = [];
let failed = false;
try {
  checkAliases();
  await run('pack', 'npm', ['pack', '--pack-destination', tmp, '--silent'], root);
  const tarball = path.join(tmp, readdirSync(tmp).find((f) => f.endsWith('.tgz'))!);
  const app = path.join(tmp, 'consumer');
  cpSync(path.join(root, 'examples', 'consumer'), app, { recursive: true, filter: (src) => !/[/\\](node_modules|dist|\.wrangler)$/.test(src) });
  // The README's example, typechecked with the consumer (it is not bundled: main is src/index.ts).
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  const example = /## Use it in your Worker[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  if (example === undefined) throw new Error('README.md has no ```ts block under "## Use it in your Worker"');
  writeFileSync(path.join(app, 'src', 'readme-example.ts'), `${example}\nexport default app;\n`);
  await run('install', 'npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', tarball], app);
  await run('typecheck', 'npm', ['run', '--silent', 'typecheck'], app);
  await run('build', 'npm', ['run', '--silent', 'build'], app);

  say('starting a private redis-server');
  const redis = await startRedisServer();
  stops.push(redis.stop);
  const port = await freePort();
  const token = randomBytes(24).toString('base64url');
  const bin = path.join(app, 'node_modules', '.bin', 'edge-redis-gateway');
  say(`starting the gateway from the tarball's bin (${path.relative(tmp, bin)}) on 127.0.0.1:${port}`);
  const gateway = spawn(bin, [], { cwd: app, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, REDIS_URL: redis.url, GATEWAY_PORT: String(port), GATEWAY_TOKEN: token } });
  const exited = new Promise<void>((resolve) => gateway.once('exit', () => resolve()));
  stops.push(async () => {
    gateway.kill('SIGTERM');
    await exited;
  });
  const gatewayUrl = `http://127.0.0.1:${port}`;
  await until200(`${gatewayUrl}/healthz`, 15_000);
  say(`the gateway answers ${gatewayUrl}/healthz with 200`);

  // A port held open that resets every connection: Redis out of reach, for the 503 test.
  const refuser = createServer((socket) => socket.resetAndDestroy());
  await new Promise<void>((resolve) => refuser.listen({ host: '127.0.0.1', port: 0 }, () => resolve()));
  stops.push(() => new Promise<void>((resolve) => refuser.close(() => resolve())));
  const closedUrl = `http://127.0.0.1:${(refuser.address() as AddressInfo).port}`;

  await run('test', 'npm', ['test', '--silent'], app, { ...process.env, GATEWAY_URL: gatewayUrl, GATEWAY_TOKEN: token, CLOSED_URL: closedUrl });
  say('the packed package installs, typechecks under strict, bundles, and passes its tests in workerd; its gateway bin starts and answers /healthz');
} catch (err) {
  failed = true;
  process.stderr.write(`[test:package] ${err instanceof Error ? err.message : String(err)}\n`);
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
  if (process.env['KEEP'] === '1') say(`kept ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
}
process.exitCode = failed ? 1 : 0;
