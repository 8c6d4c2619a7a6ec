/**
 * A lane: the connections of one Redis identity (the gateway's own user, or one token policy's ACL
 * user): one shared, pipelined connection for ordinary commands, and dedicated connections for
 * blocking commands and SSE subscriptions.
 *
 * Replies on a pipelined connection are matched to commands by order only, so a connection that
 * may have missed a reply must never serve another request: on a deadline hit, or a protocol error,
 * the shared connection is retired (closed, failing whatever else waited on it) and a fresh one
 * takes its place. Dedicated connections are closed when their request's deadline passes, so
 * nothing stays blocked in Redis after the answer.
 */
import { Cluster } from 'ioredis';
import type { Command } from './commands.ts';
import type { ReplyBudget } from './budget.ts';
import {
  connect, corkUntilIdle, DeadlineError, isReplyError, send, toOutcome, UnavailableError, waitReady, withDeadline,
  type Client, type Identity, type Outcome,
} from './connect.ts';
import { RequestError } from './commands.ts';
import { errorCode, type Logger } from './log.ts';

/** Dedicated connections of one upstream, counted across its lanes (GATEWAY_MAX_CONNECTIONS). */
export class DedicatedCount {
  value = 0;
}

/**
 * A pipeline on a Cluster. ioredis sends each command to its slot's node, and a command that meets
 * a node connection still opening, or a MOVED/ASK redirection, is retried behind the commands sent
 * after it. So commands that share a slot are chained (each waits for the previous one's answer)
 * and slots run in parallel: commands on one key keep request order; across slots Redis Cluster
 * gives no order anyway (they live on different nodes). Keyless commands run at once.
 */
function runOnCluster(cluster: Cluster, cmds: readonly Command[], slotOf: (cmd: Command) => number): Promise<unknown>[] {
  const tails = new Map<number, Promise<unknown>>();
  return cmds.map((cmd) => {
    const slot = slotOf(cmd);
    if (slot === -1) return send(cluster, cmd);
    const run = (tails.get(slot) ?? Promise.resolve()).then(() => send(cluster, cmd));
    tails.set(slot, run.catch(() => undefined));
    return run;
  });
}

/**
 * Settles each reply against the request's budget as it arrives. Only the outcomes are kept (not
 * the reply promises, which would hold every reply), so a dropped reply is garbage at once.
 */
function budgeted(replies: Promise<unknown>[], budget: ReplyBudget): Promise<Outcome[]> {
  const outcomes = replies.map((p) => p.then(
    (value): Outcome => (budget.take(value) ? { ok: true, value } : { ok: false, error: budget.error() }),
    (reason: unknown): Outcome => toOutcome({ status: 'rejected', reason }),
  ));
  replies.length = 0;
  return Promise.all(outcomes);
}

export interface LaneOptions {
  url: string;
  identity?: Identity;
  dedicated: DedicatedCount;
  slotOf: (cmd: Command) => number;
  log: Logger;
  /** Told when the shared connection comes up or goes down (the gateway's own lane reports health). */
  onStatus?: (up: boolean, detail: string) => void;
  /** Told when a connection fails to authenticate (its ACL user may be gone). */
  onAuthFailure?: () => void;
  /** Whether the server answers the gateway's own connection (see #sharedClient). */
  serverUp?: () => boolean;
}

export class Lane {
  readonly #o: LaneOptions;
  #shared: Client;
  /** Set while a replacement for a retired connection opens: requests wait for it, briefly. */
  #replacing = false;
  #closing = false;
  readonly #open = new Set<Client>();

  constructor(o: LaneOptions) {
    this.#o = o;
    this.#shared = this.#openShared();
  }

  get shared(): Client {
    return this.#shared;
  }

  #openShared(): Client {
    const client = connect(this.#o.url, {}, this.#o.identity);
    client.on('ready', () => {
      if (client === this.#shared) this.#replacing = false;
      this.#o.onStatus?.(true, 'connected');
    });
    client.on('error', (err: unknown) => {
      if (client !== this.#shared) return;
      if (isAuthError(err)) this.#o.onAuthFailure?.();
      // A reply without a command, or bytes that are not RESP: the reply order is lost.
      if (err instanceof Error && (/Command queue state error/.test(err.message) || err.name === 'ParserError')) this.retire(client, 'protocol error');
      this.#o.onStatus?.(false, errorCode(err));
    });
    client.on('close', () => {
      if (client === this.#shared) this.#o.onStatus?.(false, 'connection closed');
    });
    return client;
  }

  /** Replaces the shared connection if it is still `client` (several requests may report one). */
  retire(client: Client, why: string): void {
    if (client !== this.#shared || this.#closing) return;
    this.#o.log.warn({ why }, 'retiring a shared Redis connection; opening a fresh one');
    this.#replacing = true;
    this.#shared = this.#openShared();
    client.disconnect();
  }

  /** Opens a fresh shared connection now if the current one is not up (e.g. waiting to retry AUTH). */
  kick(): void {
    if (this.#shared.status === 'reconnecting' || this.#shared.status === 'end') this.retire(this.#shared, 'reconnecting after its user was (re)created');
  }

  /**
   * The shared connection, after waiting (up to 2 s, within the deadline) for it to come up when
   * that is worth it: a replacement for a retired connection is opening, or the server is known to
   * be up (a token's connection may still be waiting to authenticate as its re-created ACL user).
   * When Redis is down, requests fail at once instead.
   */
  async #sharedClient(deadline: number): Promise<Client> {
    const until = Math.min(deadline, Date.now() + 2_000);
    let client = this.#shared;
    while (client.status !== 'ready' && (this.#replacing || this.#o.serverUp?.() === true) && Date.now() < until) {
      await waitReady(client, until).catch(() => undefined);
      client = this.#shared;
    }
    return client;
  }

  /** Ordinary commands, in order, each with its own outcome; gives up (and retires) at `deadline`. */
  async run(cmds: readonly Command[], o: { dedicated: boolean; deadline: number; budget: ReplyBudget }): Promise<Outcome[]> {
    if (o.dedicated) return this.#onDedicated(cmds, o.deadline, o.budget);
    const client = await this.#sharedClient(o.deadline);
    corkUntilIdle(client);
    const replies = client instanceof Cluster ? runOnCluster(client, cmds, this.#o.slotOf) : cmds.map((cmd) => send(client, cmd));
    try {
      return await withDeadline(budgeted(replies, o.budget), o.deadline);
    } catch (err) {
      if (err instanceof DeadlineError) this.retire(client, 'a request deadline passed before Redis answered');
      throw err;
    }
  }

  /**
   * MULTI … EXEC. ioredis writes MULTI, the commands and EXEC in one go on the shared connection, and
   * Node runs one request's code at a time, so no other request's command can land inside.
   * Returns per-command outcomes, or throws a ReplyError when Redis discards the whole transaction.
   */
  async transaction(cmds: readonly Command[], deadline: number, budget: ReplyBudget): Promise<Outcome[]> {
    const client = await this.#sharedClient(deadline);
    corkUntilIdle(client);
    const multi = client.multi();
    for (const cmd of cmds) multi.callBuffer(cmd.wire ?? cmd.name, ...cmd.args);
    let results: [Error | null, unknown][] | null;
    try {
      results = await withDeadline(multi.exec(), deadline);
    } catch (err) {
      if (err instanceof DeadlineError) {
        this.retire(client, 'a request deadline passed before Redis answered');
        throw err;
      }
      if (isReplyError(err)) throw err;
      if (err instanceof Error && /same slot/i.test(err.message)) {
        throw new RequestError(400, "CROSSSLOT Keys in the transaction don't hash to the same slot; use hash tags like {user:1}:a", { cause: err });
      }
      throw new UnavailableError('Redis is unavailable', { cause: err });
    }
    if (results === null) throw new UnavailableError('the transaction was aborted');
    return results.map(([error, value]): Outcome => {
      if (error) return { ok: false, error };
      return budget.take(value) ? { ok: true, value } : { ok: false, error: budget.error() };
    });
  }

  async #onDedicated(cmds: readonly Command[], deadline: number, budget: ReplyBudget): Promise<Outcome[]> {
    const conn = this.dedicated();
    try {
      await waitReady(conn, deadline);
      return await withDeadline(budgeted(cmds.map((cmd) => send(conn, cmd)), budget), deadline);
    } finally {
      // Also when the deadline passed first: closing it unblocks Redis at once.
      this.release(conn);
    }
  }

  /** A connection of its own (SSE, blocking commands); give it back with {@link release}. */
  dedicated(): Client {
    const conn = connect(this.#o.url, { enableOfflineQueue: true, retryStrategy: () => null, lazyConnect: false }, this.#o.identity);
    conn.on('error', (err: unknown) => {
      if (isAuthError(err)) this.#o.onAuthFailure?.();
    });
    this.#open.add(conn);
    this.#o.dedicated.value++;
    return conn;
  }

  release(conn: Client): void {
    if (!this.#open.delete(conn)) return;
    this.#o.dedicated.value--;
    conn.disconnect();
  }

  async close(): Promise<void> {
    this.#closing = true;
    for (const conn of [...this.#open]) this.release(conn);
    try {
      await this.#shared.quit();
    } catch {
      this.#shared.disconnect();
    }
  }
}

function isAuthError(err: unknown): boolean {
  return err instanceof Error && /^(WRONGPASS|NOAUTH|NOPERM)/.test(err.message);
}
