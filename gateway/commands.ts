/**
 * Request validation: JSON body → commands as byte strings, then each command checked against the
 * token's compiled policy (policy.ts) and the shared-connection model (blocking timeouts).
 *
 * Everything in a request is checked before anything runs, so a refused pipeline changes nothing.
 */
import { createRequire } from 'node:module';
import type { CompiledPolicy, Verdict } from './policy.ts';

// The command names ioredis ships (Redis's table at its release): they decide the name sent to
// Redis (see `wire`) and the closed set of metric labels. What a command may do is decided from
// the live server's own table (command-table.ts, policy.ts).
const TABLE = createRequire(import.meta.url)('@ioredis/commands/built/commands.json') as Record<string, unknown>;

/** Whether ioredis knows the (lower-case) command name. */
function known(lower: string): boolean {
  return Object.hasOwn(TABLE, lower);
}

/**
 * An argument: text when it came as a JSON string (Redis gets its UTF-8 bytes, exactly as
 * `Buffer.from(text, 'utf8')` would give), bytes when it came as bytes (path form, a POST body).
 * Text is kept as text because ioredis writes an all-text command as one string, where any Buffer
 * argument makes it assemble buffers piece by piece: that assembly was a tenth of the gateway's
 * time on pipelines of 100.
 */
export type Arg = Buffer | string;

/** An argument as Redis compares names, options and numbers: bytes as latin1, text as it is. */
export function argText(a: Arg): string {
  return typeof a === 'string' ? a : a.toString('latin1');
}

/** One command: name upper-cased, arguments as text or bytes (binary-safe). */
export interface Command {
  name: string;
  args: Arg[];
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

function toArg(value: unknown, where: string): Arg {
  if (typeof value === 'string') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RequestError(400, `ERR ${where}: numbers must be finite`);
    return String(value);
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
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
export function named(name: string, args: Arg[]): Command {
  // A name with a non-ASCII character is unknown to Redis (`fluſhall` is not FLUSHALL to it, even
  // though JavaScript upper-cases `ſ` to `S`), so it keeps its text and gets Redis's own error.
  if (!isAscii(name)) return { name, args, wire: name };
  const upper = name.toUpperCase();
  return known(upper.toLowerCase()) ? { name: upper, args } : { name: upper, args, wire: name };
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

/** ASCII only: Redis folds ASCII letters alone, so any other character makes a name unknown to it. */
function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7e) return false;
  return true;
}

const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const INTEGER = /^-?\d+$/;

/**
 * How long a command may block, in ms, read as Redis reads it; `undefined` when it does not block.
 * Seconds are rounded up to whole ms as Redis does, and text Redis might read as a larger value
 * than JavaScript does (hex, `inf`, spaces) is refused.
 */
export function blockingTimeoutMs(cmd: Command): number | undefined {
  const n = cmd.name;
  const arg = (i: number) => {
    const a = cmd.args[i];
    return a === undefined ? '' : argText(a);
  };
  const seconds = (text: string): number => {
    if (!DECIMAL.test(text)) throw new RequestError(400, `ERR ${n}: the timeout must be a decimal number of seconds`);
    const s = Number(text);
    if (!Number.isFinite(s) || s < 0) throw new RequestError(400, `ERR ${n}: the timeout must be a non-negative number of seconds`);
    return Math.ceil(s * 1000);
  };
  const millis = (text: string, what: string): number => {
    const ms = INTEGER.test(text) ? Number(text) : NaN;
    if (!Number.isSafeInteger(ms) || ms < 0) throw new RequestError(400, `ERR ${n}: ${what} must be a non-negative whole number of milliseconds`);
    return ms;
  };
  switch (n) {
    case 'BLPOP': case 'BRPOP': case 'BZPOPMIN': case 'BZPOPMAX':
      return seconds(arg(cmd.args.length - 1));
    case 'BRPOPLPUSH': return seconds(arg(2));
    case 'BLMOVE': return seconds(arg(4));
    case 'BLMPOP': case 'BZMPOP': return seconds(arg(0));
    case 'WAIT': return millis(arg(1), 'the timeout');
    case 'WAITAOF': return millis(arg(2), 'the timeout');
    case 'XREAD': case 'XREADGROUP': return xreadBlockMs(cmd, millis);
    default: return undefined;
  }
}

/**
 * XREAD / XREADGROUP options, parsed the way Redis parses them: up to STREAMS only (a key may be
 * called BLOCK), and the last BLOCK wins (`BLOCK 100 BLOCK 0` blocks forever in Redis).
 */
function xreadBlockMs(cmd: Command, millis: (text: string, what: string) => number): number | undefined {
  const a = cmd.args;
  let block: string | undefined;
  for (let i = 0; i < a.length; i++) {
    const more = a.length - i - 1;
    const at = (j: number) => {
      const v = a[j];
      return v === undefined ? undefined : argText(v);
    };
    const opt = at(i)?.toUpperCase();
    if (opt === 'BLOCK' && more > 0) block = at(++i);
    else if (opt === 'COUNT' && more > 0) i++;
    else if (opt === 'GROUP' && more >= 2) i += 2;
    else if (opt === 'NOACK') continue;
    else break; // STREAMS, or a syntax error Redis answers itself
  }
  return block === undefined ? undefined : millis(block, 'BLOCK');
}

/** The checked batch: one verdict per command, and what running it needs. */
export interface CheckedBatch {
  verdicts: Verdict[];
  /** Holds a connection of its own (blocking commands). */
  dedicated: boolean;
  /** Some commands run on the gateway's own connection (see policy.ts). */
  onAdmin: boolean;
  /** Some run a script or function. */
  scripts: boolean;
}

function hasDbOption(cmd: Command): boolean {
  return cmd.args.some((a, i) => i >= 2 && a.length === 2 && argText(a).toUpperCase() === 'DB');
}

/**
 * Refuses what the token or the shared-connection model does not allow: 403 for policy, 400 for
 * connection-state commands and for blocking commands whose timeouts, summed over the request, do
 * not fit in the request deadline (or are infinite).
 * @param mode `transaction`: blocking commands never block inside MULTI, so they are fine there;
 *   `subscription`: the SSE routes, where SUBSCRIBE runs on a connection of its own.
 */
export function checkCommands(
  cmds: readonly Command[],
  policy: CompiledPolicy,
  timeoutMs: number,
  mode: 'plain' | 'transaction' | 'subscription' = 'plain',
): CheckedBatch {
  const verdicts: Verdict[] = new Array<Verdict>(cmds.length);
  let blockMs = 0;
  let dedicated = false;
  let onAdmin = false;
  let scripts = false;
  for (let i = 0; i < cmds.length; i++) {
    const cmd = cmds[i] as Command;
    const v = policy.verdict(cmd.name, cmd.args[0]);
    if (v.admin !== undefined) throw new RequestError(403, v.admin);
    if (v.state !== undefined && mode !== 'subscription') {
      const hint = ['MULTI', 'EXEC', 'DISCARD', 'WATCH', 'UNWATCH'].includes(cmd.name)
        ? '; send the commands to /multi-exec for a transaction'
        : cmd.name.endsWith('SUBSCRIBE') ? '; use the /subscribe/<channel> or /psubscribe/<pattern> SSE routes' : '';
      throw new RequestError(400, `ERR ${v.state} changes the connection's state and is not supported by this gateway${hint}`);
    }
    if (v.refuse !== undefined) throw new RequestError(403, v.refuse);
    if (v.crossDb && hasDbOption(cmd)) throw new RequestError(403, `NOPERM ${cmd.name} … DB reaches another database and is denied for this token`);
    if (v.blocking && mode === 'plain') {
      const ms = blockingTimeoutMs(cmd);
      if (ms !== undefined) {
        if (ms === 0) throw new RequestError(400, `ERR ${cmd.name}: timeout 0 would block forever; give a timeout shorter than the gateway's ${timeoutMs} ms request deadline`);
        blockMs += ms;
        dedicated = true;
      }
    }
    if (v.lane === 'admin') onAdmin = true;
    if (v.script) scripts = true;
    verdicts[i] = v;
  }
  if (blockMs >= timeoutMs) {
    throw new RequestError(400, `ERR the blocking timeouts of this request add up to ${blockMs} ms, which does not fit the gateway's ${timeoutMs} ms request deadline; give shorter timeouts`);
  }
  return { verdicts, dedicated, onAdmin, scripts };
}

/** Label for metrics: known command names only, so clients cannot blow up cardinality. */
export function metricName(cmd: Command): string {
  const lower = cmd.name.toLowerCase();
  return known(lower) ? lower : 'unknown';
}
