/**
 * The gateway's side of one Redis URL: its command table, the lane of the gateway's own Redis user
 * (health checks, tokens with nothing to enforce), one lane per token policy that needs a Redis ACL
 * user (acl.ts), and a control connection that kills scripts outliving their request.
 *
 * Everything that depends on the server (the table, the compiled policies, the ACL users) is
 * (re)built whenever the gateway's own connection becomes ready, at start-up and after every
 * reconnect, so a restarted or failed-over Redis gets the same policy back. Until the first build a
 * token has no runtime and its requests answer 503, as when Redis is down.
 */
import { getKeyIndexes } from '@ioredis/commands';
import calculateSlot from 'cluster-key-slot';
import { Cluster } from 'ioredis';
import { AclUsers, aclUserName } from './acl.ts';
import type { Command } from './commands.ts';
import { parseCommandTable, versionOf, type CommandTable } from './command-table.ts';
import { parseRedisUrl, redactUrl, type TokenPolicy } from './config.ts';
import { connect, isCluster, isReplyError, UnavailableError, waitReady, withDeadline, type Client, type Identity } from './connect.ts';
import { DedicatedCount, Lane } from './lane.ts';
import { errorFields, type Logger } from './log.ts';
import { compilePolicy, isRestricted, type CompiledPolicy } from './policy.ts';
import { ALIAS_KEY, ALIAS_LIMIT, ALIAS_WRITE, ScriptAliases } from './scripts.ts';

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

/** What a token runs with on this Redis. */
export interface TokenRuntime {
  policy: CompiledPolicy;
  /** Its own lane (its ACL user), or the gateway's when it has nothing to enforce. */
  lane: Lane;
  /** The gateway's own lane (INFO, COPY: see policy.ts). */
  admin: Lane;
  db: number;
}

// What an ACL user needs for a Cluster client to find and follow the slots.
const CLUSTER_RULES = ['+cluster|slots', '+cluster|shards', '+cluster|nodes', '+cluster|info', '+asking', '+readonly'];

export interface UpstreamOptions {
  tokens: readonly TokenPolicy[];
  allowAdminCommands: boolean;
  acl: AclUsers;
  log: Logger;
  /** Signs the script aliases this Redis holds (scripts.ts). */
  scriptAliasSecret: string;
}

export class Upstream {
  readonly url: string;
  readonly admin: Lane;
  readonly dedicated = new DedicatedCount();
  /** Script aliases of this Redis, shared with every gateway process through it. */
  readonly scripts: ScriptAliases;
  readonly #o: UpstreamOptions;
  readonly #control: Client;
  readonly #db: number;
  readonly #lanes = new Map<string, Lane>();
  #runtimes = new Map<TokenPolicy, TokenRuntime>();
  #table: CommandTable | undefined;
  #up = false;
  #closing = false;
  #refreshing: Promise<void> | undefined;
  #again = false;
  #built: Promise<void>;
  #resolveBuilt!: () => void;

  constructor(url: string, o: UpstreamOptions) {
    this.url = url;
    this.#o = o;
    this.#db = parseRedisUrl(url, 'redis url').db;
    this.#built = new Promise((resolve) => {
      this.#resolveBuilt = resolve;
    });
    this.admin = new Lane({
      url,
      dedicated: this.dedicated,
      slotOf,
      log: o.log,
      onStatus: (up, detail) => {
        this.#setUp(up, detail);
        if (up) this.refresh();
      },
    });
    const key = Buffer.from(ALIAS_KEY);
    this.scripts = new ScriptAliases({
      secret: o.scriptAliasSecret,
      store: {
        read: (fields) => withDeadline(this.admin.shared.hmgetBuffer(key, ...fields), Date.now() + 1_000),
        // HSET, and the whole hash dropped past ALIAS_LIMIT fields: a client sending endless
        // distinct flagged scripts cannot grow it without bound (a dropped alias costs one EVAL).
        write: (field, value) => {
          this.admin.shared.eval(ALIAS_WRITE, 1, key, field, value, ALIAS_LIMIT).catch(() => undefined);
        },
      },
    });
    this.#control = connect(url);
    this.#control.on('error', () => undefined); // its failures only mean a script is not killed
  }

  get up(): boolean {
    return this.#up;
  }

  #setUp(up: boolean, detail: string): void {
    if (up === this.#up || this.#closing) return;
    this.#up = up;
    if (up) this.#o.log.info({ redis: redactUrl(this.url) }, 'redis is up');
    else this.#o.log.error({ redis: redactUrl(this.url), err: detail }, 'redis is down');
  }

  /** The runtime of `token`, or undefined until the command table has been read. */
  forToken(token: TokenPolicy): TokenRuntime | undefined {
    return this.#runtimes.get(token);
  }

  /** Waits for the first build (connection, command table, ACL users), up to `ms`; resolves either way. */
  async ready(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#built, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
  }

  /** Re-reads the command table and re-applies every policy (one build at a time). */
  refresh(): void {
    if (this.#refreshing) {
      this.#again = true;
      return;
    }
    this.#refreshing = this.#build()
      .catch((err: unknown) => this.#o.log.warn({ redis: redactUrl(this.url), err: errorFields(err) }, "could not read Redis's command table; will retry on reconnect"))
      .finally(() => {
        this.#refreshing = undefined;
        if (this.#again && !this.#closing) {
          this.#again = false;
          this.refresh();
        }
      });
  }

  async #build(): Promise<void> {
    const client = this.admin.shared;
    const [reply, info] = await Promise.all([client.call('COMMAND'), client.call('INFO', 'server')]);
    const table = parseCommandTable(reply, versionOf(String(info)));
    const runtimes = new Map<TokenPolicy, TokenRuntime>();
    const used = new Set<string>();
    const noAcl: string[] = [];
    // Tokens with the same policy share one user: set it up once per build.
    const ensured = new Map<string, Promise<boolean>>();
    const options = { allowAdminCommands: this.#o.allowAdminCommands, db: this.#db, ...(isCluster(this.url) ? { connectionRules: CLUSTER_RULES } : {}) };
    for (const token of this.#o.tokens) {
      let policy: CompiledPolicy;
      let laneName: string | undefined;
      let identity: Identity | undefined;
      if (!isRestricted(token, this.#o.allowAdminCommands)) {
        policy = compilePolicy(table, token, options, 'unrestricted');
      } else if (token.redisUser) {
        policy = compilePolicy(table, token, options, 'operator');
        laneName = `operator:${token.redisUser.name}`;
        identity = { username: token.redisUser.name, ...(token.redisUser.password !== undefined ? { password: token.redisUser.password } : {}) };
      } else {
        policy = compilePolicy(table, token, options, 'acl');
        const name = aclUserName(policy.aclRules ?? []);
        if (!ensured.has(name)) ensured.set(name, this.#o.acl.ensure(client, name, policy.aclRules ?? []));
        if (await ensured.get(name)) {
          laneName = name;
          identity = { username: name, password: this.#o.acl.password };
        } else {
          noAcl.push(token.name);
          policy = compilePolicy(table, token, options, 'none');
        }
      }
      let lane = this.admin;
      if (laneName !== undefined && identity !== undefined) {
        lane = this.#lane(laneName, identity);
        used.add(laneName);
      }
      if (policy.unknownNames.length > 0 && this.#table === undefined) {
        this.#o.log.warn({ tokenName: token.name, unknown: policy.unknownNames, redisVersion: table.version }, `token "${token.name}": ${policy.unknownNames.join(', ')} in its allow/deny list ${policy.unknownNames.length === 1 ? 'is' : 'are'} not a command Redis ${table.version} knows`);
      }
      runtimes.set(token, { policy, lane, admin: this.admin, db: this.#db });
    }
    if (noAcl.length > 0) {
      this.#o.log.warn(`the gateway's Redis user may not run ACL SETUSER, so scripts are refused for the restricted token(s) ${noAcl.join(', ')} (see the README: "Policy inside scripts")`);
    }
    this.#table = table;
    this.#runtimes = runtimes;
    for (const [name, lane] of this.#lanes) {
      if (!used.has(name)) {
        this.#lanes.delete(name);
        void lane.close();
      } else {
        lane.kick();
      }
    }
    // Serve once the tokens' own connections are up too (or have had their chance).
    await Promise.all([...this.#lanes.values()].map((l) => waitReady(l.shared, Date.now() + 2_000).catch(() => undefined)));
    this.#resolveBuilt();
  }

  #lane(name: string, identity: Identity): Lane {
    let lane = this.#lanes.get(name);
    if (!lane) {
      lane = new Lane({ url: this.url, identity, dedicated: this.dedicated, slotOf, log: this.#o.log, onAuthFailure: () => this.refresh(), serverUp: () => this.#up });
      this.#lanes.set(name, lane);
    }
    return lane;
  }

  /**
   * Kills the script or function running in Redis (called when one outlived its request's deadline),
   * on a connection of its own: the one that sent the script waits behind it.
   */
  async killScripts(): Promise<void> {
    const nodes = this.#control instanceof Cluster ? this.#control.nodes('master') : [this.#control];
    for (const node of nodes) {
      for (const cmd of ['SCRIPT', 'FUNCTION']) {
        try {
          await node.call(cmd, 'KILL');
          this.#o.log.warn(`killed a ${cmd === 'SCRIPT' ? 'script' : 'function'} that outlived its request's deadline`);
        } catch (err) {
          if (isReplyError(err) && /^UNKILLABLE/.test(err.message)) {
            this.#o.log.warn('a script that outlived its request has already written, so Redis cannot kill it: Redis answers BUSY until it ends (only SHUTDOWN NOSAVE stops it)');
          }
          // NOTBUSY: nothing (or not this kind) was running.
        }
      }
    }
  }

  async ping(timeoutMs: number): Promise<void> {
    const client = this.admin.shared;
    if (client.status !== 'ready') throw new UnavailableError(`Redis connection is ${client.status}`);
    await withDeadline(client.ping(), Date.now() + timeoutMs);
  }

  async close(): Promise<void> {
    this.#closing = true;
    await this.#refreshing;
    const admin = this.admin.shared;
    if (admin.status === 'ready') {
      await Promise.all([...this.#lanes.keys()].filter((n) => !n.startsWith('operator:')).map((n) => this.#o.acl.forget(admin, n)));
    }
    await Promise.all([...this.#lanes.values()].map((l) => l.close()));
    this.#control.disconnect();
    await this.admin.close();
  }
}
