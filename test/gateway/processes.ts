/**
 * Test support for the hardening suites: a gateway in a child process (so its memory can be
 * measured apart from the test runner's), a direct Redis connection for looking at what Redis
 * itself saw (INFO, CLIENT LIST, ACL), and raw sockets for what fetch cannot do (slow or idle
 * clients, many sockets).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { watchChild } from '../support/child-output.ts';
import { startRedisServer, type RedisProcess } from '../support/redis-process.ts';
import { privateGateway, tokensFile, type PrivateGateway, type Target } from './helpers.ts';

const MAIN = join(import.meta.dirname, '..', '..', 'gateway', 'main.ts');

export interface ChildGateway {
  url: string;
  token: string;
  pid: number;
  /** What it printed (stdout and stderr). */
  output: string[];
  /** Resident memory now, and its high-water mark, in MiB (from /proc). */
  memory(): { rssMiB: number; peakMiB: number };
  /** Sends `signal` and resolves with the exit code once the process has exited. */
  signal(signal: NodeJS.Signals): Promise<number | null>;
  stop(): Promise<void>;
}

/** `npm run gateway` as a child process on a free port, configured by `env`. */
export async function childGateway(env: Record<string, string>): Promise<ChildGateway> {
  const token = env['GATEWAY_TOKEN'] ?? randomUUID();
  // The runner's environment without its gateway and Redis settings: only `env` configures it.
  const inherited = { ...process.env };
  for (const key of Object.keys(inherited)) if (/^(GATEWAY_|SRH_|REDIS_URL$)/.test(key)) delete inherited[key];
  const child: ChildProcess = spawn(process.execPath, [MAIN], {
    env: { ...inherited, GATEWAY_HOST: '127.0.0.1', ...env, GATEWAY_TOKEN: token, GATEWAY_PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // The listening line is JSON: the URL ends at a quote.
  const { output, exited, ready } = watchChild(child, 'the gateway', (line) => /listening on (http:\/\/[^\s"]+)/.exec(line)?.[1], 10_000);
  const url = await ready;
  const pid = child.pid ?? 0;
  return {
    url,
    token,
    pid,
    output,
    memory() {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
      return { rssMiB: kb('VmRSS') / 1024, peakMiB: kb('VmHWM') / 1024 };
    },
    signal(signal) {
      child.kill(signal);
      return exited;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** The lines of CLIENT LIST. */
export async function clientList(redis: Redis): Promise<string[]> {
  return String(await redis.call('CLIENT', 'LIST')).split('\n').filter(Boolean);
}

/** A plain ioredis connection, for looking at Redis directly. */
export function direct(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: false });
}

/** `field` of an INFO section (`blocked_clients`, `cmdstat_flushall`…), as text; '' when absent. */
export async function infoField(redis: Redis, section: string, field: string): Promise<string> {
  const text = await redis.info(section);
  return new RegExp(`^${field.replace(/[|]/g, '\\|')}:([^\\r\\n]*)`, 'm').exec(text)?.[1] ?? '';
}

/** `calls` of a command in INFO commandstats (0 when Redis never ran it). */
export async function calls(redis: Redis, command: string): Promise<number> {
  const stat = await infoField(redis, 'commandstats', `cmdstat_${command.toLowerCase()}`);
  return Number(/calls=(\d+)/.exec(stat)?.[1] ?? 0);
}

/** A raw TCP connection to a gateway URL. */
export function socketTo(url: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: hostname, port: Number(port) }, () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * What a socket receives until `done(text)` holds or the peer closes it; `timedOut` when neither
 * happened within `ms`.
 */
export function readUntil(socket: Socket, ms: number, done: (text: string) => boolean = () => false): Promise<{ text: string; timedOut: boolean; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    const finish = (timedOut: boolean, closed: boolean) => {
      clearTimeout(timer);
      socket.off('data', onData);
      resolve({ text, timedOut, closed });
    };
    const timer = setTimeout(() => finish(true, false), ms);
    const onData = (d: Buffer) => {
      text += d.toString('latin1');
      if (done(text)) finish(false, false);
    };
    socket.on('data', onData);
    socket.once('close', () => finish(false, true));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A script that keeps Redis busy for about a second, then returns 1 (it writes nothing, so it can be killed). */
export const BUSY_1S =
  "local t = redis.call('TIME') while true do local n = redis.call('TIME') if (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 1000000 then return 1 end end";

/** A private redis-server, a direct connection to it, and a private gateway in front of it. */
export interface PrivateStack {
  redis: RedisProcess;
  /** Direct connection, for looking at (and preparing) Redis. */
  look: Redis;
  gw: PrivateGateway;
  /** The gateway with another token of the tokens file. */
  as(token: string): Target;
  close(): Promise<void>;
}

export interface StackOptions {
  /** Entries of a tokens file, given the Redis URL (the gateway then has no GATEWAY_TOKEN). */
  tokens?: (redisUrl: string, port: number) => Record<string, unknown>[];
  /** More gateway settings (REDIS_URL defaults to the private Redis). */
  env?: Record<string, string> | ((redis: RedisProcess) => Record<string, string>);
  /** Runs on Redis before the gateway starts (ACL users, data). */
  prepare?: (look: Redis, redis: RedisProcess) => Promise<void>;
}

export async function privateStack(o: StackOptions = {}): Promise<PrivateStack> {
  const redis = await startRedisServer();
  const look = direct(redis.url);
  await o.prepare?.(look, redis);
  const file = o.tokens ? tokensFile({ tokens: o.tokens(redis.url, redis.port) }) : undefined;
  const gw = await privateGateway({
    REDIS_URL: redis.url,
    ...(file ? { GATEWAY_TOKEN: '', GATEWAY_TOKENS_FILE: file.path } : {}),
    ...(typeof o.env === 'function' ? o.env(redis) : o.env),
  });
  return {
    redis, look, gw,
    as: (token) => ({ url: gw.url, token }),
    async close() {
      look.disconnect();
      await gw.close();
      await redis.stop();
      file?.remove();
    },
  };
}
