/**
 * Opening Redis connections, and the errors and outcomes the executor speaks in.
 *
 * The client is ioredis, chosen because it gives raw binary-safe replies (strings as Buffers,
 * integers as exact decimal strings), pipelining on one connection, and Cluster and Sentinel behind
 * the same call API. Settings that matter for correctness:
 * - no offline queue and no resend of unanswered commands: when Redis is down a request fails at
 *   once (503) instead of waiting, and a command is never sent twice after a reconnect;
 * - command names are sent upper-case: ioredis reshapes some replies (HGETALL into an object, …)
 *   keyed by lower-case names, and the gateway must pass Redis's replies through untouched;
 * - no CLIENT SETINFO on connect (Redis 7.0 does not know it, and ACL users need not allow it).
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import redisErrors from 'redis-errors';
import type { Command } from './commands.ts';
import { parseRedisUrl, type RedisTarget } from './config.ts';

export type Client = Redis | Cluster;

/** One command's outcome: a reply or a Redis error (never a connection failure). */
export type Outcome = { ok: true; value: unknown } | { ok: false; error: Error };

/** Redis could not be reached or the connection broke: the request answers 503. */
export class UnavailableError extends Error {
  override name = 'UnavailableError';
}

export class DeadlineError extends Error {
  override name = 'DeadlineError';
}

export function isReplyError(err: unknown): err is Error {
  return err instanceof redisErrors.ReplyError;
}

/** Who a connection authenticates as, when not the user of the Redis URL. */
export interface Identity {
  username: string;
  password?: string;
}

const BASE: RedisOptions = {
  // RESP2, as the Upstash protocol expects (ioredis 6 defaults to RESP3, whose maps, pairs and
  // doubles have other shapes).
  protocol: 2,
  stringNumbers: true,
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  connectTimeout: 5_000,
  disableClientInfo: true,
  // Reconnect forever, backing off to 1 s, so the gateway recovers by itself when Redis returns.
  retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1_000),
};

// ioredis's constructor types want `replyMapping` present-or-absent, never `undefined`, which
// `exactOptionalPropertyTypes` makes visible; stating it (RESP2-shaped replies) settles that.
type Options = RedisOptions & { replyMapping: 'legacy' };

function optionsFor(target: RedisTarget, extra: RedisOptions, identity: Identity | undefined): Options {
  const username = identity ? identity.username : target.username;
  const password = identity ? identity.password : target.password;
  return {
    ...BASE,
    ...extra,
    replyMapping: 'legacy',
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    // An ACL user may not be allowed INFO, which the ready check sends.
    ...(identity ? { enableReadyCheck: false } : {}),
    ...(target.tls ? { tls: {} } : {}),
    db: target.db,
  };
}

/** A client for `url`, authenticated as `identity` when given (as the URL's user otherwise). */
export function connect(url: string, extra: RedisOptions = {}, identity?: Identity): Client {
  const target = parseRedisUrl(url, 'redis url');
  const first = target.hosts[0] ?? { host: '127.0.0.1', port: 6379 };
  if (target.kind === 'cluster') {
    const redisOptions = optionsFor(target, extra, identity);
    const clusterOptions: ClusterOptions & { redisOptions: Options } = {
      redisOptions,
      enableOfflineQueue: extra.enableOfflineQueue ?? false,
      ...(identity ? { enableReadyCheck: false } : {}),
      clusterRetryStrategy: BASE.retryStrategy ?? (() => 1_000),
    };
    return new Cluster(target.hosts, clusterOptions);
  }
  if (target.kind === 'sentinel') {
    return new Redis({
      ...optionsFor(target, extra, identity),
      sentinels: target.hosts,
      name: target.masterName ?? 'mymaster',
      ...(target.password !== undefined ? { sentinelPassword: target.password } : {}),
    });
  }
  return new Redis({ ...optionsFor(target, extra, identity), host: first.host, port: first.port });
}

export function isCluster(url: string): boolean {
  return parseRedisUrl(url, 'redis url').kind === 'cluster';
}

/**
 * Holds a connection's writes until the event loop has run every callback that is ready now, then
 * sends them as one `writev`: the commands of one pipeline, and of every request that arrived in
 * the same loop turn, cost one system call instead of one each (the gateway's profile had a third
 * of its time in per-command socket writes). ioredis's own `enableAutoPipelining` batches the same
 * way (setImmediate) but builds a Pipeline object per batch; corking the socket keeps ioredis's
 * plain per-command path. Cluster connections are left alone (ioredis owns their node sockets).
 */
const corked = new WeakSet<object>();
export function corkUntilIdle(client: Client): void {
  if (client instanceof Cluster) return;
  const stream = client.stream;
  if (!stream || corked.has(stream) || stream.destroyed) return;
  corked.add(stream);
  stream.cork();
  setImmediate(() => {
    corked.delete(stream);
    stream.uncork();
  });
}

export function send(client: Client, cmd: Command): Promise<unknown> {
  return client.callBuffer(cmd.wire ?? cmd.name, ...cmd.args);
}

export function toOutcome(result: PromiseSettledResult<unknown>): Outcome {
  if (result.status === 'fulfilled') return { ok: true, value: result.value };
  const err: unknown = result.reason;
  if (isReplyError(err)) return { ok: false, error: err };
  throw new UnavailableError('Redis is unavailable', { cause: err });
}

/** Runs `work` but gives up at `deadline` (ms since epoch); the late answer is dropped. */
export async function withDeadline<T>(work: Promise<T>, deadline: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError('the request deadline passed before Redis answered')), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves when `conn` is ready; rejects when it ends first, or at `deadline` (ms since epoch). */
export function waitReady(conn: Client, deadline = Infinity): Promise<void> {
  if (conn.status === 'ready') return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      conn.off('ready', onReady);
      conn.off('end', onEnd);
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    };
    const onReady = () => done();
    const onEnd = () => done(new UnavailableError('could not open a Redis connection'));
    const timer = Number.isFinite(deadline) ? setTimeout(() => done(new DeadlineError('the request deadline passed while connecting to Redis')), Math.max(0, deadline - Date.now())) : undefined;
    conn.once('ready', onReady);
    conn.once('end', onEnd);
  });
}

/** A short reason for logs: error code or message, never a URL or password. */
export function describe(err: unknown): string {
  if (err && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const message = (err as { message?: unknown }).message;
    if (typeof message === 'string') return message.replace(/\/\/[^@\s]*@/g, '//***@');
  }
  return 'unknown error';
}
