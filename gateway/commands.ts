/**
 * Request validation and command policy: JSON body → commands as byte strings, then what each
 * command is allowed to do on a shared, pooled connection and under which token.
 *
 * Everything in a request is checked before anything runs, so a refused pipeline changes nothing.
 */
import { createRequire } from 'node:module';
import type { TokenPolicy } from './config.ts';

interface CommandSpec { flags: string[]; subcommands?: Record<string, CommandSpec> }
// Redis's own command table (flags readonly/write/blocking per command and subcommand), as shipped
// with ioredis, so the read-only policy follows Redis rather than a hand-kept list.
const TABLE = createRequire(import.meta.url)('@ioredis/commands/built/commands.json') as Record<string, CommandSpec>;

function spec(name: string, sub?: string): CommandSpec | undefined {
  const top = Object.hasOwn(TABLE, name) ? TABLE[name] : undefined;
  if (sub === undefined || !top?.subcommands) return top;
  return Object.hasOwn(top.subcommands, sub) ? top.subcommands[sub] : undefined;
}

/** One command: name upper-cased, arguments as bytes (binary-safe). */
export interface Command {
  name: string;
  args: Buffer[];
  /**
   * The name sent to Redis: upper-case for commands Redis knows (see upstream.ts on why), as the
   * client wrote it otherwise, so `ERR unknown command '<name>'` echoes the caller's text verbatim.
   */
  wire?: string;
}

/** A refusal with the HTTP status the client gets; the message is safe to show. */
export class RequestError extends Error {
  override name = 'RequestError';
  readonly status: number;
  constructor(status: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
  }
}

function toArg(value: unknown, where: string): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RequestError(400, `ERR ${where}: numbers must be finite`);
    return Buffer.from(String(value));
  }
  if (typeof value === 'boolean') return Buffer.from(value ? 'true' : 'false');
  const what = value === null ? 'null' : Array.isArray(value) ? 'a nested array' : typeof value;
  throw new RequestError(400, `ERR ${where} is ${what}; arguments must be strings, numbers or booleans`);
}

/** One JSON command `["set","k","v"]` → {@link Command}. */
export function toCommand(raw: unknown, where: string): Command {
  if (!Array.isArray(raw)) throw new RequestError(400, `ERR ${where} must be an array like ["get","key"]`);
  if (raw.length === 0) throw new RequestError(400, `ERR ${where} is an empty command`);
  const [head, ...rest] = raw;
  if (typeof head !== 'string' || head === '') throw new RequestError(400, `ERR ${where}: the command name must be a non-empty string`);
  return named(head, rest.map((v, i) => toArg(v, `${where} argument ${i + 1}`)));
}

/** Builds a command from the name as the client sent it. */
export function named(name: string, args: Buffer[]): Command {
  const upper = name.toUpperCase();
  return spec(upper.toLowerCase()) ? { name: upper, args } : { name: upper, args, wire: name };
}

export function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new RequestError(400, 'ERR the request body is not valid JSON', { cause });
  }
}

/** Body of `/`: one command. */
export function parseSingle(body: Buffer): Command {
  return toCommand(parseJson(body), 'the command');
}

/** Body of `/pipeline` and `/multi-exec`: an array of commands. */
export function parseBatch(body: Buffer, max: number): Command[] {
  const doc = parseJson(body);
  if (!Array.isArray(doc)) throw new RequestError(400, 'ERR the body must be an array of commands like [["get","a"],["get","b"]]');
  if (doc.length === 0) throw new RequestError(400, 'ERR the pipeline is empty');
  if (doc.length > max) throw new RequestError(400, `ERR the pipeline has ${doc.length} commands; the limit is ${max}`);
  return doc.map((c: unknown, i: number) => toCommand(c, `command ${i}`));
}

// Server administration: denied unless GATEWAY_ALLOW_ADMIN_COMMANDS=true. Whole commands, then
// "COMMAND SUBCOMMAND" pairs. The seed articles' rename-command list (FLUSHALL, FLUSHDB, CONFIG) is
// here; their EVAL is not, because @upstash/ratelimit and every client script need it.
const ADMIN = new Set([
  'FLUSHALL', 'FLUSHDB', 'CONFIG', 'DEBUG', 'SHUTDOWN', 'REPLICAOF', 'SLAVEOF', 'MODULE', 'ACL', 'MONITOR',
  'SAVE', 'BGSAVE', 'BGREWRITEAOF', 'FAILOVER', 'SYNC', 'PSYNC', 'CLUSTER', 'MIGRATE', 'SWAPDB', 'CLIENT',
  'SCRIPT KILL', 'SCRIPT FLUSH', 'FUNCTION KILL', 'FUNCTION FLUSH', 'FUNCTION RESTORE', 'FUNCTION DELETE',
  'SLOWLOG RESET', 'LATENCY RESET', 'MEMORY PURGE', 'LASTSAVE',
]);

// Commands that change the state of the connection they run on. On a pooled connection that state
// would leak into other requests, so they are refused (MULTI/EXEC go through /multi-exec; SUBSCRIBE
// through /subscribe SSE).
const CONNECTION_STATE = new Set([
  'SELECT', 'MULTI', 'EXEC', 'DISCARD', 'WATCH', 'UNWATCH', 'SUBSCRIBE', 'PSUBSCRIBE', 'SSUBSCRIBE',
  'UNSUBSCRIBE', 'PUNSUBSCRIBE', 'SUNSUBSCRIBE', 'HELLO', 'RESET', 'AUTH', 'QUIT', 'READONLY', 'READWRITE',
  'ASKING', 'MONITOR', 'SYNC', 'PSYNC', 'CLIENT REPLY', 'CLIENT SETNAME', 'CLIENT SETINFO', 'CLIENT TRACKING', 'CLIENT CACHING',
  'CLIENT NO-EVICT', 'CLIENT NO-TOUCH',
]);

// Allowed for read-only tokens although Redis does not flag them `readonly`.
const READONLY_EXTRA = new Set(['PING', 'ECHO', 'TIME', 'INFO', 'COMMAND', 'SCRIPT EXISTS', 'PUBSUB', 'SUBSCRIBE', 'PSUBSCRIBE', 'LOLWUT']);

/** `SCRIPT LOAD` for a command with subcommands, else the name. */
export function qualifiedName(cmd: Command): string {
  const sub = cmd.args[0];
  if (sub === undefined || sub.length > 32) return cmd.name;
  const subName = sub.toString('latin1').toLowerCase();
  return spec(cmd.name.toLowerCase())?.subcommands?.[subName] ? `${cmd.name} ${subName.toUpperCase()}` : cmd.name;
}

function isReadonly(cmd: Command): boolean {
  const q = qualifiedName(cmd);
  if (READONLY_EXTRA.has(q) || READONLY_EXTRA.has(cmd.name)) return true;
  const [name, sub] = q.toLowerCase().split(' ');
  const flags = spec(name ?? '', sub)?.flags ?? [];
  return flags.includes('readonly') && !flags.includes('write');
}

/** Whether the command may block its connection; blocking ones need a dedicated connection. */
export function blockingTimeoutMs(cmd: Command): number | undefined {
  const n = cmd.name;
  const argText = (i: number) => cmd.args[i]?.toString('latin1') ?? '';
  const seconds = (text: string, where: string): number => {
    const s = Number(text);
    if (!Number.isFinite(s) || s < 0) throw new RequestError(400, `ERR ${n}: ${where} must be a non-negative number`);
    return s * 1000;
  };
  switch (n) {
    case 'BLPOP': case 'BRPOP': case 'BZPOPMIN': case 'BZPOPMAX':
      return seconds(argText(cmd.args.length - 1), 'timeout');
    case 'BRPOPLPUSH': return seconds(argText(2), 'timeout');
    case 'BLMOVE': return seconds(argText(4), 'timeout');
    case 'BLMPOP': case 'BZMPOP': return seconds(argText(0), 'timeout');
    // WAIT and WAITAOF take milliseconds.
    case 'WAIT': return seconds(argText(1), 'timeout') / 1000;
    case 'WAITAOF': return seconds(argText(2), 'timeout') / 1000;
    case 'XREAD': case 'XREADGROUP': {
      const i = cmd.args.findIndex((a) => a.toString('latin1').toUpperCase() === 'BLOCK');
      if (i === -1) return undefined;
      const ms = Number(argText(i + 1));
      if (!Number.isFinite(ms) || ms < 0) throw new RequestError(400, `ERR ${n}: BLOCK must be a non-negative number of milliseconds`);
      return ms;
    }
    default: return undefined;
  }
}

export interface Policy {
  allowAdminCommands: boolean;
  timeoutMs: number;
}

/**
 * Refuses what the token or the shared-connection model does not allow: 403 for policy, 400 for
 * connection-state commands and for blocking commands whose timeout is infinite or longer than the
 * request deadline. Returns whether the batch needs a dedicated connection.
 * @param mode `transaction`: blocking commands never block inside MULTI, so they are fine there;
 *   `subscription`: the SSE routes, where SUBSCRIBE runs on a connection of its own.
 */
export function checkCommands(
  cmds: readonly Command[],
  token: TokenPolicy,
  policy: Policy,
  mode: 'plain' | 'transaction' | 'subscription' = 'plain',
): { dedicated: boolean } {
  let dedicated = false;
  for (const cmd of cmds) {
    const q = qualifiedName(cmd);
    if (!policy.allowAdminCommands && (ADMIN.has(cmd.name) || ADMIN.has(q))) {
      throw new RequestError(403, `NOPERM ${q} is a server administration command and is denied by the gateway (GATEWAY_ALLOW_ADMIN_COMMANDS=true lifts this)`);
    }
    if (mode !== 'subscription' && (CONNECTION_STATE.has(cmd.name) || CONNECTION_STATE.has(q))) {
      const hint = ['MULTI', 'EXEC', 'DISCARD', 'WATCH', 'UNWATCH'].includes(cmd.name)
        ? '; send the commands to /multi-exec for a transaction'
        : cmd.name.endsWith('SUBSCRIBE') ? '; use the /subscribe/<channel> or /psubscribe/<pattern> SSE routes' : '';
      throw new RequestError(400, `ERR ${q} changes the connection's state and is not supported by this gateway${hint}`);
    }
    if (token.deny && (token.deny.includes(cmd.name) || token.deny.includes(q))) {
      throw new RequestError(403, `NOPERM ${q} is denied for this token`);
    }
    if (token.allow && !token.allow.includes(cmd.name) && !token.allow.includes(q)) {
      throw new RequestError(403, `NOPERM ${q} is not in this token's allow list`);
    }
    if (token.readonly && !isReadonly(cmd)) {
      throw new RequestError(403, `NOPERM ${q} is not a read command and this token is read-only`);
    }
    if (mode === 'plain') {
      const blockMs = blockingTimeoutMs(cmd);
      if (blockMs !== undefined) {
        if (blockMs === 0 || blockMs >= policy.timeoutMs) {
          const why = blockMs === 0 ? 'timeout 0 would block forever' : 'its timeout is not shorter than the deadline';
          throw new RequestError(400, `ERR ${cmd.name}: ${why}; give a timeout shorter than the gateway's ${policy.timeoutMs} ms request deadline`);
        }
        dedicated = true;
      }
    }
  }
  return { dedicated };
}

/** Label for metrics: known command names only, so clients cannot blow up cardinality. */
export function metricName(cmd: Command): string {
  const lower = cmd.name.toLowerCase();
  return spec(lower) ? lower : 'unknown';
}
