/**
 * What each token may run, decided once per token and Redis (at start-up and after every reconnect)
 * from Redis's own command table, and kept as a map from command name to verdict so a request costs
 * one lookup per command.
 *
 * The same decisions become the Redis ACL user the token's connections authenticate as (see
 * acl.ts), so Redis itself enforces them inside EVAL, EVALSHA, EVAL_RO and FCALL, where the gateway
 * cannot look. The hand lists below say why each entry is there; the README's lists are generated
 * from this module (`npm run docs:gateway`, checked by test/gateway/command-docs.test.ts).
 */
import { aclName, type CommandEntry, type CommandTable } from './command-table.ts';
import type { TokenPolicy } from './config.ts';
import { argText, type Arg } from './commands.ts';

/** Commands Redis flags admin or dangerous that the gateway passes anyway, and why. */
export const PASS_DANGEROUS: ReadonlyMap<string, string> = new Map([
  ['INFO', "clients read it for health and memory; tokens other than fully trusted ones get it without server paths, addresses or other databases' key counts"],
  ['KEYS', "`@upstash/redis` users call `redis.keys()`; it is O(keys) like a full SCAN: deny it per token on a large database"],
  ['SORT', 'a list/set/sorted-set command (`redis.sort()`); flagged dangerous because its BY/GET patterns read other keys, which key ACLs would not cover; the gateway grants every token all keys of its database anyway'],
  ['SORT_RO', 'the read-only SORT, same reasoning'],
]);

/** Denied by default although Redis does not flag them admin or dangerous, and why. */
export const ALSO_DENIED: ReadonlyMap<string, string> = new Map([
  ['CLIENT', 'every subcommand: the connection is the gateway\'s, shared by many requests, not the caller\'s'],
  ['CLUSTER', 'topology and slot administration; clients of the gateway never need it'],
  ['SCRIPT FLUSH', "empties every token's script cache"],
  ['SCRIPT KILL', "kills whatever script runs, another token's included (the gateway kills scripts that outlive their request itself)"],
  ['FUNCTION LOAD', "functions are server-wide and called by name: one token could replace another's library"],
  ['FUNCTION DELETE', 'server-wide, as FUNCTION LOAD'],
  ['FUNCTION FLUSH', 'server-wide, as FUNCTION LOAD'],
  ['FUNCTION RESTORE', 'server-wide, as FUNCTION LOAD'],
  ['FUNCTION KILL', 'as SCRIPT KILL'],
  ['MEMORY PURGE', 'server administration'],
  ['MOVE', "writes into another database, which may be another token's"],
]);

/** Refused even with GATEWAY_ALLOW_ADMIN_COMMANDS=true: they never make sense on a pooled connection. */
export const NEVER: ReadonlyMap<string, string> = new Map([
  ['REPLCONF', 'Redis sends no reply to some forms: every later reply on the shared connection would reach the wrong request'],
  ['SCRIPT DEBUG', 'the next EVAL would enter the Lua debugger and stop Redis for everyone'],
  ['CLIENT PAUSE', "pauses every client, the gateway's own connections included"],
  ['CLIENT UNPAUSE', 'the other half of CLIENT PAUSE'],
  ['CLIENT KILL', "closes connections the gateway shares between requests"],
]);

/** They change the state of the connection they run on: refused with 400 and a hint. */
export const CONNECTION_STATE: ReadonlySet<string> = new Set([
  'SELECT', 'MULTI', 'EXEC', 'DISCARD', 'WATCH', 'UNWATCH', 'SUBSCRIBE', 'PSUBSCRIBE', 'SSUBSCRIBE',
  'UNSUBSCRIBE', 'PUNSUBSCRIBE', 'SUNSUBSCRIBE', 'HELLO', 'RESET', 'AUTH', 'QUIT', 'READONLY', 'READWRITE',
  'ASKING', 'MONITOR', 'SYNC', 'PSYNC', 'CLIENT REPLY', 'CLIENT SETNAME', 'CLIENT SETINFO', 'CLIENT TRACKING',
  'CLIENT CACHING', 'CLIENT NO-EVICT', 'CLIENT NO-TOUCH',
]);

/** Allowed for read-only tokens although Redis does not flag them `readonly`. */
const READONLY_EXTRA = new Set(['PING', 'ECHO', 'TIME', 'INFO', 'COMMAND', 'SCRIPT EXISTS', 'PUBSUB', 'SUBSCRIBE', 'PSUBSCRIBE', 'LOLWUT']);

/** Commands that run Lua code or a function. */
export const SCRIPT_RUNNERS: ReadonlySet<string> = new Set(['EVAL', 'EVAL_RO', 'EVALSHA', 'EVALSHA_RO', 'FCALL', 'FCALL_RO']);

/** Commands with a client-given blocking timeout (see blockingTimeoutMs in commands.ts). */
const BLOCKING = new Set(['BLPOP', 'BRPOP', 'BZPOPMIN', 'BZPOPMAX', 'BRPOPLPUSH', 'BLMOVE', 'BLMPOP', 'BZMPOP', 'WAIT', 'WAITAOF', 'XREAD', 'XREADGROUP']);

/**
 * How a token's restrictions are made to hold inside scripts:
 * - `unrestricted`: none to enforce (admin commands allowed, no read-only / allow / deny);
 * - `acl`: a Redis ACL user the gateway created for this policy;
 * - `operator`: a Redis user the operator manages, named in the tokens file;
 * - `none`: no ACL user could be had, so scripts are refused.
 */
export type ScriptBinding = 'unrestricted' | 'acl' | 'operator' | 'none';

/** Which connection a command runs on: the token's (its ACL user) or the gateway's own. */
export type Lane = 'token' | 'admin';

export interface Verdict {
  /** Refused as server administration (checked first, with 403). */
  admin?: string;
  /** Changes the connection's state: refused with 400, except SUBSCRIBE/PSUBSCRIBE on the SSE routes. */
  state?: string;
  /** Refused by the token's policy (403); the message is safe to show. */
  refuse?: string;
  lane: Lane;
  /** Has a client-given blocking timeout. */
  blocking: boolean;
  /** Runs Lua or a function (killed by the gateway when it outlives the request). */
  script: boolean;
  /** INFO, answered without what the token must not see. */
  shapeInfo: boolean;
  /** COPY: refused when it names another database. */
  crossDb: boolean;
}

export interface CompiledPolicy {
  binding: ScriptBinding;
  /** `ACL SETUSER` rules (after the user name) for binding `acl`. */
  aclRules?: string[];
  /** Entries of the token's allow / deny lists this Redis does not know (for a warning at start-up). */
  unknownNames: string[];
  /** The verdict on a command, by upper-case name and first argument (the subcommand, if any). */
  verdict(name: string, firstArg: Arg | undefined): Verdict;
}

export interface PolicyOptions {
  allowAdminCommands: boolean;
  /** The token's database: its ACL user may SELECT that one only (ioredis selects it on connect). */
  db: number;
  /** Extra ACL rules the connection itself needs (e.g. CLUSTER SLOTS for a Cluster client). */
  connectionRules?: readonly string[];
}

/** Whether a token has anything to enforce beyond what the gateway's own Redis user may do. */
export function isRestricted(token: TokenPolicy, allowAdminCommands: boolean): boolean {
  return !allowAdminCommands || token.readonly || token.allow !== undefined || token.deny !== undefined;
}

export function isAdminFlagged(e: CommandEntry): boolean {
  return e.flags.has('admin') || e.categories.has('admin') || e.categories.has('dangerous');
}

/** Denied without GATEWAY_ALLOW_ADMIN_COMMANDS: flagged admin/dangerous (minus the pass list), or on the hand list. */
export function deniedByDefault(e: CommandEntry, parent: string | undefined): boolean {
  if (ALSO_DENIED.has(e.name) || (parent !== undefined && ALSO_DENIED.has(parent))) return true;
  return isAdminFlagged(e) && !PASS_DANGEROUS.has(e.name);
}

function listed(list: readonly string[] | undefined, name: string, parent: string | undefined): boolean {
  return list !== undefined && (list.includes(name) || (parent !== undefined && list.includes(parent)));
}

function isReadonly(e: CommandEntry, parent: string | undefined): boolean {
  if (READONLY_EXTRA.has(e.name) || (parent !== undefined && READONLY_EXTRA.has(parent))) return true;
  return e.flags.has('readonly') && !e.flags.has('write');
}

const NO_SCRIPTS =
  'scripts are refused for this token because the gateway cannot have Redis enforce its policy inside them ' +
  "(no ACL user: let the gateway's Redis user run ACL SETUSER, or name a redisUser for this token)";

/** The token's own refusals, in the order their messages take precedence. */
function refusal(e: CommandEntry, parent: string | undefined, token: TokenPolicy, binding: ScriptBinding): string | undefined {
  const n = e.name;
  if (NEVER.has(n)) return `NOPERM ${n} is never allowed through the gateway: ${NEVER.get(n) ?? ''}`;
  // A deny of X covers its read-only twin X_RO (EVAL → EVAL_RO, SORT → SORT_RO, …).
  if (listed(token.deny, n, parent) || (n.endsWith('_RO') && listed(token.deny, n.slice(0, -3), undefined))) {
    return `NOPERM ${n} is denied for this token`;
  }
  if (token.allow && !listed(token.allow, n, parent)) return `NOPERM ${n} is not in this token's allow list`;
  if (token.readonly && !isReadonly(e, parent)) return `NOPERM ${n} is not a read command and this token is read-only`;
  if (binding === 'none' && SCRIPT_RUNNERS.has(n)) return `NOPERM ${n}: ${NO_SCRIPTS}`;
  return undefined;
}

function decide(e: CommandEntry, parent: string | undefined, token: TokenPolicy, o: PolicyOptions, binding: ScriptBinding): Verdict {
  const n = e.name;
  const admin = !o.allowAdminCommands && deniedByDefault(e, parent)
    ? `NOPERM ${n} is a server administration command and is denied by the gateway (GATEWAY_ALLOW_ADMIN_COMMANDS=true lifts this)`
    : undefined;
  const state = CONNECTION_STATE.has(n) || (parent !== undefined && CONNECTION_STATE.has(parent)) ? n : undefined;
  const refuse = refusal(e, parent, token, binding);
  // With a gateway-made ACL user, INFO (shaped) and COPY (checked for a DB option) run on the
  // gateway's own connection, so that the ACL user can refuse them inside scripts.
  const onAdmin = binding === 'acl' && (n === 'INFO' || n === 'COPY');
  return {
    ...(admin !== undefined ? { admin } : {}),
    ...(state !== undefined ? { state } : {}),
    ...(refuse !== undefined ? { refuse } : {}),
    lane: onAdmin ? 'admin' : 'token',
    blocking: BLOCKING.has(n),
    script: SCRIPT_RUNNERS.has(n),
    shapeInfo: binding !== 'unrestricted' && n === 'INFO',
    crossDb: !o.allowAdminCommands && n === 'COPY',
  };
}

const allowed = (v: Verdict | undefined): boolean => v !== undefined && v.admin === undefined && v.refuse === undefined;

/** The ACL rules that grant exactly what the verdicts allow on the token's connection. */
function aclRulesFor(verdicts: ReadonlyMap<string, Verdict>, o: PolicyOptions): string[] {
  const grants = new Set<string>();
  for (const [name, v] of verdicts) {
    if (allowed(v) && v.state === undefined && v.lane === 'token') grants.add(`+${aclName(name)}`);
  }
  // What the gateway itself sends on the token's connection: MULTI/EXEC for /multi-exec, SUBSCRIBE
  // for the SSE routes (where the policy allows it). SELECT only of the token's own database, since
  // scripts may call it.
  for (const name of ['multi', 'exec', 'discard']) grants.add(`+${name}`);
  if (allowed(verdicts.get('SUBSCRIBE'))) grants.add('+subscribe').add('+unsubscribe');
  if (allowed(verdicts.get('PSUBSCRIBE'))) grants.add('+psubscribe').add('+punsubscribe');
  if (o.db !== 0) grants.add(`+select|${o.db}`);
  for (const rule of o.connectionRules ?? []) grants.add(rule);
  return ['on', 'resetkeys', '~*', 'resetchannels', '&*', '-@all', ...[...grants].sort()];
}

/** Decides every command of `table` for `token`. */
export function compilePolicy(table: CommandTable, token: TokenPolicy, o: PolicyOptions, binding: ScriptBinding): CompiledPolicy {
  const verdicts = new Map<string, Verdict>();
  const containers = new Map<string, Verdict>();
  const pass: Verdict = { lane: 'token', blocking: false, script: false, shapeInfo: false, crossDb: false };
  for (const top of table.commands.values()) {
    if (!top.subcommands) {
      verdicts.set(top.name, decide(top, undefined, token, o, binding));
      continue;
    }
    for (const sub of top.subcommands.values()) verdicts.set(sub.name, decide(sub, top.name, token, o, binding));
    // An unknown subcommand gets Redis's own error, unless the allow list does not name the command.
    containers.set(top.name, token.allow && !token.allow.includes(top.name)
      ? { ...pass, refuse: `NOPERM ${top.name} with this subcommand is not in this token's allow list` }
      : pass);
  }
  // So does a command this Redis does not know, except where no ACL user binds the token: a
  // command renamed with rename-command is listed under its old name, so the new one could be
  // anything, FLUSHALL included.
  const unknown: Verdict = token.allow
    ? { ...pass, refuse: "NOPERM the command is not in this token's allow list" }
    : binding === 'none'
      ? { ...pass, refuse: "NOPERM the command is not in this Redis's COMMAND table (a renamed command?), and without an ACL user the gateway cannot check it for this token" }
      : pass;
  const unknownNames = [...(token.allow ?? []), ...(token.deny ?? [])].filter((n) => !table.commands.has(n) && !verdicts.has(n));
  return {
    binding,
    ...(binding === 'acl' ? { aclRules: aclRulesFor(verdicts, o) } : {}),
    unknownNames,
    verdict(name, firstArg) {
      const container = containers.get(name);
      if (container === undefined) return verdicts.get(name) ?? unknown;
      return (firstArg !== undefined && firstArg.length <= 32 ? verdicts.get(`${name} ${asciiUpper(argText(firstArg))}`) : undefined) ?? container;
    },
  };
}

/** Upper-cases ASCII letters only, as Redis compares names (`ß` must not become `SS`). */
export function asciiUpper(s: string): string {
  return s.replace(/[a-z]+/g, (m) => m.toUpperCase());
}
