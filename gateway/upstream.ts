/**
 * The gateway's side of Redis: one multiplexed connection per upstream for ordinary commands, and
 * dedicated connections for blocking commands and SSE subscriptions.
 *
 * The client is ioredis, chosen because it gives raw binary-safe replies (strings as Buffers,
 * integers as exact decimal strings), pipelining on one connection, and Cluster and Sentinel behind
 * the same call API. Two settings matter for correctness:
 * - no offline queue and no resend of unanswered commands: when Redis is down a request fails at
 *   once (503) instead of waiting, and a command is never sent twice after a reconnect;
 * - command names are sent upper-case: ioredis reshapes some replies (HGETALL into an object, …)
 *   keyed by lower-case names, and the gateway must pass Redis's replies through untouched.
 */
import { getKeyIndexes } from '@ioredis/commands';
import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import redisErrors from 'redis-errors';
import { RequestError, type Command } from './commands.ts';
import { parseRedisUrl, type RedisTarget } from './config.ts';

export type Client = Redis | Cluster;

/** One command's outcome: a reply or a Redis error (never a connection failure). */
export type Outcome = { ok: true; value: unknown } | { ok: false; error: Error };

/** Redis could not be reached or the connection broke: the request answers 503. */
export class UnavailableError extends Error {
  override name = 'UnavailableError';
}

export function isReplyError(err: unknown): err is Error {
  return err instanceof redisErrors.ReplyError;
}

function toOutcome(result: PromiseSettledResult<unknown>): Outcome {
  if (result.status === 'fulfilled') return { ok: true, value: result.value };
  const err: unknown = result.reason;
  if (isReplyError(err)) return { ok: false, error: err };
  throw new UnavailableError('Redis is unavailable', { cause: err });
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
  // Reconnect forever, backing off to 1 s, so the gateway recovers by itself when Redis returns.
  retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1_000),
};

// ioredis's constructor types want `replyMapping` present-or-absent, never `undefined`, which
// `exactOptionalPropertyTypes` makes visible; stating it (RESP2-shaped replies) settles that.
type Options = RedisOptions & { replyMapping: 'legacy' };

function optionsFor(target: RedisTarget, extra: RedisOptions): Options {
  return {
    ...BASE,
    ...extra,
    replyMapping: 'legacy',
    ...(target.username !== undefined ? { username: target.username } : {}),
    ...(target.password !== undefined ? { password: target.password } : {}),
    ...(target.tls ? { tls: {} } : {}),
    db: target.db,
  };
}

function connect(url: string, extra: RedisOptions = {}): Client {
  const target = parseRedisUrl(url, 'redis url');
  const first = target.hosts[0] ?? { host: '127.0.0.1', port: 6379 };
  if (target.kind === 'cluster') {
    const redisOptions = optionsFor(target, extra);
    const clusterOptions: ClusterOptions & { redisOptions: Options } = {
      redisOptions,
      enableOfflineQueue: false,
      clusterRetryStrategy: BASE.retryStrategy ?? (() => 1_000),
    };
    return new Cluster(target.hosts, clusterOptions);
  }
  if (target.kind === 'sentinel') {
    return new Redis({
      ...optionsFor(target, extra),
      sentinels: target.hosts,
      name: target.masterName ?? 'mymaster',
      ...(target.password !== undefined ? { sentinelPassword: target.password } : {}),
    });
  }
  return new Redis({ ...optionsFor(target, extra), host: first.host, port: first.port });
}

function send(client: Client, cmd: Command): Promise<unknown> {
  return client.callBuffer(cmd.wire ?? cmd.name, ...cmd.args);
}

/** The hash slot of a command's first key; -1 for keyless commands. */
function slotOf(cmd: Command): number {
  try {
    const [first] = getKeyIndexes(cmd.name.toLowerCase(), cmd.args);
    const key = first === undefined ? undefined : cmd.args[first];
    return key === undefined ? -1 : calculateSlot(key);
  } catch {
    return -1; // a command ioredis does not know: let Redis answer it
  }
}

/**
 * A pipeline on a Cluster. ioredis sends each command to its slot's node, and a command that meets
 * a node connection still opening, or a MOVED/ASK redirection, is retried behind the commands sent
 * after it. So commands that share a slot are chained (each waits for the previous one's answer)
 * and slots run in parallel: commands on one key keep request order; across slots Redis Cluster
 * gives no order anyway (they live on different nodes). Keyless commands run at once.
 */
async function runOnCluster(cluster: Cluster, cmds: readonly Command[]): Promise<PromiseSettledResult<unknown>[]> {
  const tails = new Map<number, Promise<unknown>>();
  const runs = cmds.map((cmd) => {
    const slot = slotOf(cmd);
    if (slot === -1) return send(cluster, cmd);
    const run = (tails.get(slot) ?? Promise.resolve()).then(() => send(cluster, cmd));
    tails.set(slot, run.catch(() => undefined));
    return run;
  });
  return Promise.allSettled(runs);
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

export class DeadlineError extends Error {
  override name = 'DeadlineError';
}

export class Upstream {
  readonly url: string;
  readonly client: Client;
  #dedicated = new Set<Client>();
  #onStatus: (up: boolean, detail: string) => void;
  #up = false;

  constructor(url: string, onStatus: (up: boolean, detail: string) => void) {
    this.url = url;
    this.#onStatus = onStatus;
    this.client = connect(url);
    this.client.on('ready', () => this.#setUp(true, 'connected'));
    this.client.on('error', (err: unknown) => this.#setUp(false, describe(err)));
    this.client.on('close', () => this.#setUp(false, 'connection closed'));
    this.client.on('end', () => this.#setUp(false, 'connection closed'));
  }

  get up(): boolean {
    return this.#up;
  }

  #closing = false;

  #setUp(up: boolean, detail: string): void {
    if (up === this.#up || this.#closing) return;
    this.#up = up;
    this.#onStatus(up, detail);
  }

  /** Waits for the first connection, up to `ms`; resolves either way. */
  async ready(ms: number): Promise<void> {
    if (this.#up) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.client.once('ready', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** Ordinary commands on the shared connection, in order, each with its own outcome. */
  async run(cmds: readonly Command[], dedicated: boolean): Promise<Outcome[]> {
    if (dedicated) return this.#onDedicated((c) => Promise.allSettled(cmds.map((cmd) => send(c, cmd))));
    if (this.client instanceof Cluster) return (await runOnCluster(this.client, cmds)).map(toOutcome);
    return (await Promise.allSettled(cmds.map((cmd) => send(this.client, cmd)))).map(toOutcome);
  }

  /**
   * MULTI … EXEC. ioredis writes MULTI, the commands and EXEC in one go on the shared connection, and
   * Node runs one request's code at a time, so no other request's command can land inside.
   * Returns per-command outcomes, or throws a ReplyError when Redis discards the whole transaction.
   */
  async transaction(cmds: readonly Command[]): Promise<Outcome[]> {
    const multi = this.client.multi();
    for (const cmd of cmds) multi.callBuffer(cmd.wire ?? cmd.name, ...cmd.args);
    let results: [Error | null, unknown][] | null;
    try {
      results = await multi.exec();
    } catch (err) {
      if (isReplyError(err)) throw err;
      if (err instanceof Error && /same slot/i.test(err.message)) {
        throw new RequestError(400, "CROSSSLOT Keys in the transaction don't hash to the same slot; use hash tags like {user:1}:a", { cause: err });
      }
      throw new UnavailableError('Redis is unavailable', { cause: err });
    }
    if (results === null) throw new UnavailableError('the transaction was aborted');
    return results.map(([error, value]) => (error ? { ok: false, error } : { ok: true, value }));
  }

  async #onDedicated(work: (c: Client) => Promise<PromiseSettledResult<unknown>[]>): Promise<Outcome[]> {
    const conn = this.dedicated();
    try {
      await waitReady(conn);
      return (await work(conn)).map(toOutcome);
    } finally {
      this.release(conn);
    }
  }

  /** A connection of its own (SSE, blocking commands); give it back with {@link release}. */
  dedicated(): Client {
    const conn = connect(this.url, { enableOfflineQueue: true, retryStrategy: () => null, lazyConnect: false });
    conn.on('error', () => undefined); // reported through the command that fails
    this.#dedicated.add(conn);
    return conn;
  }

  release(conn: Client): void {
    this.#dedicated.delete(conn);
    conn.disconnect();
  }

  get dedicatedCount(): number {
    return this.#dedicated.size;
  }

  async ping(timeoutMs: number): Promise<void> {
    if (this.client.status !== 'ready') throw new UnavailableError(`Redis connection is ${this.client.status}`);
    await withDeadline(this.client.ping(), Date.now() + timeoutMs);
  }

  async close(): Promise<void> {
    this.#closing = true;
    for (const conn of this.#dedicated) conn.disconnect();
    this.#dedicated.clear();
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}

async function waitReady(conn: Client): Promise<void> {
  if (conn.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const onReady = () => {
      conn.off('end', onEnd);
      resolve();
    };
    const onEnd = () => {
      conn.off('ready', onReady);
      reject(new UnavailableError('could not open a dedicated Redis connection'));
    };
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
