/**
 * Private redis-server processes for tests (Node only: globalSetup and the gateway suite) and for
 * `npm run dev`. Each one listens on 127.0.0.1 on a free port and is killed when the process that
 * started it exits, so a crashed run leaves no server behind. The shared Redis on 6379 is never used.
 * By default a server keeps nothing on disk; with `dir` it keeps its data there (append-only file,
 * fsync every second) and is stopped with SIGTERM, so it writes what it has before it exits.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { connect, createServer, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { onLines } from './child-output.ts';

/** A redis-server this process started. */
export interface RedisProcess {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Kills the server and waits for it to exit. Idempotent. */
  stop(): Promise<void>;
  /** Stops the server, then starts it again on the same port: empty, unless it keeps a `dir`. */
  restart(): Promise<void>;
}

export class RedisServerNotFoundError extends Error {
  override name = 'RedisServerNotFoundError';
}

const NOT_FOUND =
  'redis-server not found on PATH: install it (apt-get install redis-server) or set REDIS_URL=redis://host:port';

/** Throws {@link RedisServerNotFoundError} at once when `redis-server` cannot be run. */
export function assertRedisServerOnPath(): void {
  const probe = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) throw new RedisServerNotFoundError(NOT_FOUND, { cause: probe.error });
}

/**
 * A TCP port that was free a moment ago (the OS picks it). Another process may take it before the
 * caller binds it, so callers that bind retry with a new port.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('could not read the port of a probe listener'));
      });
    });
  });
}

/**
 * The process id of the Redis answering on `port` (INFO server over raw RESP), or undefined when
 * nothing answers. Checking the pid, not just PING, proves it is our server and not another one
 * that grabbed the port first.
 */
function serverPid(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (pid: number | undefined) => {
      socket.destroy();
      resolve(pid);
    };
    socket.setTimeout(1_000, () => done(undefined));
    socket.once('error', () => done(undefined));
    socket.once('close', () => done(undefined));
    socket.once('connect', () => socket.write('INFO server\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.startsWith('-')) return done(undefined); // e.g. LOADING: not ready yet
      const match = /\r\nprocess_id:(\d+)\r\n/.exec(reply);
      if (match?.[1] !== undefined) done(Number(match[1]));
    });
  });
}

interface Spawned {
  child: ChildProcess;
  exited: Promise<void>;
}

/** Keeps the last lines redis-server printed, for the error message when it fails to start. */
function spawnRedis(port: number, output: string[], dir: string | undefined): Spawned {
  const storage = dir === undefined ? ['--save', '', '--appendonly', 'no'] : ['--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec'];
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', ...storage, '--daemonize', 'no', '--loglevel', 'warning'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  onLines(child, (line) => {
    output.push(line);
    if (output.length > 20) output.shift();
  });
  // A server someone forgot to stop must not keep the test process alive; the exit hook kills it.
  child.unref();
  // With stdio 'pipe' the streams are sockets, which hold the event loop until unref'd.
  for (const stream of [child.stdout, child.stderr]) if (stream instanceof Socket) stream.unref();
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      output.push(String(err));
      resolve();
    });
  });
  return { child, exited };
}

/** Waits until our server answers on `port`; false if it exits first or does not answer in `ms`. */
async function waitUntilUp(port: number, spawned: Spawned, ms: number): Promise<boolean> {
  let exited = false;
  void spawned.exited.then(() => {
    exited = true;
  });
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && !exited) {
    if ((await serverPid(port)) === spawned.child.pid) return true;
    await sleep(25);
  }
  return false;
}

/** SIGKILL, or with `graceful` SIGTERM first (a server with a `dir` then writes its data out) and SIGKILL after 10 s. */
async function kill(spawned: Spawned, graceful = false): Promise<void> {
  if (spawned.child.exitCode !== null || spawned.child.signalCode !== null) return;
  spawned.child.ref(); // keep the process alive until the exit event arrives
  if (graceful) {
    spawned.child.kill('SIGTERM');
    const timer = setTimeout(() => spawned.child.kill('SIGKILL'), 10_000);
    await spawned.exited;
    clearTimeout(timer);
    return;
  }
  spawned.child.kill('SIGKILL');
  await spawned.exited;
}

// Servers still running when the process exits (a crash, a forgotten stop) are killed with it.
const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  running.add(child);
  void new Promise<void>((resolve) => child.once('exit', () => resolve())).then(() => running.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of running) c.kill('SIGKILL');
    });
  }
}

async function startOn(port: number, dir: string | undefined): Promise<Spawned | string> {
  const output: string[] = [];
  const spawned = spawnRedis(port, output, dir);
  track(spawned.child);
  // Loading a large append-only file takes a while; an empty server is up at once.
  if (await waitUntilUp(port, spawned, dir === undefined ? 10_000 : 120_000)) return spawned;
  await kill(spawned);
  return output.join('\n') || 'no output';
}

/**
 * Starts a private redis-server on a free port and resolves once it answers PING.
 * Throws {@link RedisServerNotFoundError} at once when redis-server is not installed.
 *
 * @param options.dir keep the data in this folder (created if missing) across restarts and runs
 * @example
 * const redis = await startRedisServer();
 * try { … redis.url … ; await redis.restart(); } finally { await redis.stop(); }
 */
export async function startRedisServer(options: { dir?: string } = {}): Promise<RedisProcess> {
  const { dir } = options;
  if (dir !== undefined) mkdirSync(dir, { recursive: true });
  assertRedisServerOnPath();
  let port = 0;
  let current: Spawned | undefined;
  let lastOutput = '';
  // A port probed free can be taken before redis-server binds it: try a few.
  for (let attempt = 0; attempt < 3 && !current; attempt++) {
    port = await freePort();
    const started = await startOn(port, dir);
    if (typeof started === 'string') lastOutput = started;
    else current = started;
  }
  if (!current) throw new Error(`redis-server did not start; its last output:\n${lastOutput}`);

  let server: Spawned | undefined = current;
  const stop = async () => {
    const s = server;
    server = undefined;
    if (s) await kill(s, dir !== undefined);
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    async restart() {
      await stop();
      // The old socket is closed once the process has exited, and redis-server sets SO_REUSEADDR,
      // so the same port binds again at once.
      const started = await startOn(port, dir);
      if (typeof started === 'string') throw new Error(`redis-server did not restart on port ${port}; its last output:\n${started}`);
      server = started;
    },
  };
}
