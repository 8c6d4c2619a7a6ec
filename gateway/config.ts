/**
 * Gateway configuration, read once from the environment and checked by zod schemas.
 *
 * Every problem becomes a {@link ConfigError} whose message is one line naming the variable and what
 * is wrong with it, so `main.ts` can print it and exit non-zero without a stack trace. The schemas'
 * messages say `{where}`, filled in with the variable (or tokens-file entry) the value came from.
 * SRH's variable names and tokens-file shape are accepted as aliases, so moving from SRH is a
 * one-line change in a compose file. (Just over 400 lines: the environment's schema, the tokens
 * file's two shapes and the Redis URL parser they share are kept together.)
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { LOG_LEVELS, type LogLevel } from './log.ts';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** What one bearer token may do, and against which Redis. */
export interface TokenPolicy {
  /** Label used in logs and metrics; never the token itself. */
  name: string;
  token: string;
  redisUrl: string;
  /** Read commands only (commands Redis flags `readonly`, plus PING, ECHO, TIME, SSE subscribe…). */
  readonly: boolean;
  /** When set, only these commands (`GET`, or `SCRIPT LOAD` for one subcommand) are allowed. */
  allow?: readonly string[];
  /** Always refused, after `allow`. */
  deny?: readonly string[];
  /**
   * A Redis ACL user the operator manages: the token's connections authenticate as it, and the
   * gateway trusts its ACL to bind what scripts do. Without it the gateway makes its own user.
   */
  redisUser?: { name: string; password?: string };
}

export interface GatewayConfig {
  host: string;
  port: number;
  /** Default upstream: `GATEWAY_TOKEN` talks to it and `/healthz` pings it. */
  redisUrl: string;
  tokens: TokenPolicy[];
  /** Lifts the default deny of server administration (FLUSHALL, CONFIG, …). For dev and tests. */
  allowAdminCommands: boolean;
  /** Added before every HTTP answer, to simulate a far-away Redis. */
  latencyMs: number;
  maxBodyBytes: number;
  maxPipelineCommands: number;
  /** Per-request deadline; also the upper bound of a blocking command's own timeout. */
  timeoutMs: number;
  /** Interval of `: keepalive` comments on SSE streams. */
  keepaliveMs: number;
  /** Path prefix in front of every route (e.g. `/redis`), empty by default. */
  basePath: string;
  /** Upper bound of concurrent SSE subscriptions and blocking commands (each holds a connection). */
  maxDedicatedConnections: number;
  /** Redis reply bytes one request may receive before its answer becomes an error. */
  maxReplyBytes: number;
  /** Bytes an SSE stream may have waiting for a slow client before it is ended. */
  maxStreamBufferBytes: number;
  /** Open client sockets; more are closed at once. */
  maxSockets: number;
  /** Time to receive a request's headers. */
  headersTimeoutMs: number;
  /** Time to receive a whole request, headers and body. */
  bodyTimeoutMs: number;
  /** How long a keep-alive socket may sit idle between requests. */
  idleTimeoutMs: number;
  /** Access log lines at `info` instead of `debug`. */
  logRequests: boolean;
  /** `GATEWAY_LOG_LEVEL`: the least severe level logged (default `info`). */
  logLevel: LogLevel;
  /**
   * Signs the script aliases shared in Redis (scripts.ts). `GATEWAY_SCRIPT_ALIAS_SECRET`, else
   * derived from every configured token, so replicas with the same tokens agree without setting it.
   */
  scriptAliasSecret: string;
  /** Processes serving the port (`GATEWAY_WORKERS`, `auto` = available cores); 1 = no cluster. */
  workers: number;
}

type Env = Record<string, string | undefined>;

/** Each setting and the variables it is read from, ours first, then SRH's. */
const VARIABLES = {
  srhMode: ['SRH_MODE'],
  redisUrl: ['REDIS_URL', 'SRH_CONNECTION_STRING'],
  token: ['GATEWAY_TOKEN', 'SRH_TOKEN'],
  redisUser: ['GATEWAY_REDIS_USER'],
  redisPassword: ['GATEWAY_REDIS_PASSWORD'],
  tokensFile: ['GATEWAY_TOKENS_FILE', 'SRH_CONFIG_FILE'],
  basePath: ['GATEWAY_BASE_PATH'],
  headersTimeoutMs: ['GATEWAY_HEADERS_TIMEOUT_MS'],
  bodyTimeoutMs: ['GATEWAY_BODY_TIMEOUT_MS'],
  host: ['GATEWAY_HOST'],
  port: ['GATEWAY_PORT', 'SRH_PORT'],
  allowAdminCommands: ['GATEWAY_ALLOW_ADMIN_COMMANDS'],
  latencyMs: ['GATEWAY_LATENCY_MS'],
  maxBodyBytes: ['GATEWAY_MAX_BODY_BYTES'],
  maxPipelineCommands: ['GATEWAY_MAX_PIPELINE_COMMANDS'],
  timeoutMs: ['GATEWAY_TIMEOUT_MS'],
  keepaliveMs: ['GATEWAY_KEEPALIVE_MS'],
  maxDedicatedConnections: ['GATEWAY_MAX_CONNECTIONS', 'SRH_MAX_CONNECTIONS'],
  maxReplyBytes: ['GATEWAY_MAX_REPLY_BYTES'],
  maxStreamBufferBytes: ['GATEWAY_MAX_STREAM_BUFFER_BYTES'],
  maxSockets: ['GATEWAY_MAX_SOCKETS'],
  idleTimeoutMs: ['GATEWAY_IDLE_TIMEOUT_MS'],
  logRequests: ['GATEWAY_LOG_REQUESTS'],
  logLevel: ['GATEWAY_LOG_LEVEL'],
  scriptAliasSecret: ['GATEWAY_SCRIPT_ALIAS_SECRET'],
  workers: ['GATEWAY_WORKERS'],
} as const satisfies Record<string, readonly string[]>;

type Setting = keyof typeof VARIABLES;

/**
 * For each setting, the first non-empty value among its variables (trimmed) and the variable it came
 * from. Only that one is checked: an SRH alias left over beside our variable is ignored.
 */
function resolve(env: Env): { values: Partial<Record<Setting, string>>; from: Partial<Record<Setting, string>> } {
  const values: Partial<Record<Setting, string>> = {};
  const from: Partial<Record<Setting, string>> = {};
  for (const [setting, names] of Object.entries(VARIABLES) as [Setting, readonly string[]][]) {
    for (const name of names) {
      const value = env[name]?.trim();
      if (value !== undefined && value !== '') {
        values[setting] = value;
        from[setting] = name;
        break;
      }
    }
  }
  return { values, from };
}

/** The first issue of a failed parse as a {@link ConfigError}, `{where}` filled in. */
function configError(error: z.ZodError, where: (path: readonly PropertyKey[]) => string): ConfigError {
  const issue = error.issues[0];
  const message = issue ? issue.message.replaceAll('{where}', where(issue.path)) : 'invalid configuration';
  return new ConfigError(message, { cause: error });
}

function whole(min: number, max: number) {
  const range = (iss: { input?: unknown }) => `{where} must be between ${min} and ${max}, got ${String(iss.input)}`;
  return z.string()
    .regex(/^\d+$/, { error: (iss) => `{where} must be a whole number, got "${String(iss.input)}"` })
    .transform(Number)
    .pipe(z.number().min(min, { error: range }).max(max, { error: range }));
}

const TRUE = ['1', 'true', 'yes', 'on'];
const FALSE = ['0', 'false', 'no', 'off'];
const bool = z.string()
  .refine((v) => TRUE.includes(v.toLowerCase()) || FALSE.includes(v.toLowerCase()), { error: (iss) => `{where} must be true or false, got "${String(iss.input)}"` })
  .transform((v) => TRUE.includes(v.toLowerCase()));

/** A Redis URL, checked by {@link parseRedisUrl}; `field` follows `{where}` in its messages. */
function redisUrl(field = '') {
  return z.string().superRefine((url, ctx) => {
    try {
      parseRedisUrl(url, `{where}${field}`);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      ctx.addIssue({ code: 'custom', message: err.message, input: url });
    }
  });
}

function token(empty: string) {
  return z.string({ error: empty })
    .min(1, { error: empty })
    .regex(/^\S+$/, { error: '{where}: token must not contain whitespace' });
}

const userName = (field: string) => z.string({ error: `${field} must be a Redis user name (no whitespace)` })
  .regex(/^\S+$/, { error: `${field} must be a Redis user name (no whitespace)` });

const ENV = z.object({
  srhMode: z.string().transform((v) => v.toLowerCase())
    .pipe(z.enum(['env', 'file'], { error: (iss) => `{where} must be "env" or "file", got "${String(iss.input)}"` }))
    .optional(),
  redisUrl: redisUrl().default('redis://127.0.0.1:6379'),
  token: token('{where}: token must be a non-empty string').optional(),
  redisUser: userName('{where}').optional(),
  redisPassword: z.string().optional(),
  tokensFile: z.string().optional(),
  basePath: z.string().transform((v) => v.replace(/\/+$/, ''))
    .refine((v) => v === '' || /^\/[\w\-./]*$/.test(v), { error: (iss) => `{where} must look like /prefix, got "${String(iss.input)}"` })
    .default(''),
  headersTimeoutMs: whole(100, 600_000).default(10_000),
  bodyTimeoutMs: whole(100, 3_600_000).default(30_000),
  host: z.string().default('127.0.0.1'),
  port: whole(0, 65_535).default(8079),
  allowAdminCommands: bool.default(false),
  latencyMs: whole(0, 60_000).default(0),
  maxBodyBytes: whole(1, 1024 * 1024 * 1024).default(10 * 1024 * 1024),
  maxPipelineCommands: whole(1, 1_000_000).default(10_000),
  timeoutMs: whole(100, 600_000).default(30_000),
  keepaliveMs: whole(100, 600_000).default(15_000),
  maxDedicatedConnections: whole(1, 100_000).default(1_000),
  maxReplyBytes: whole(1_024, 1024 * 1024 * 1024).default(32 * 1024 * 1024),
  maxStreamBufferBytes: whole(1_024, 1024 * 1024 * 1024).default(4 * 1024 * 1024),
  maxSockets: whole(1, 1_000_000).default(4_096),
  // Above the 60 s idle timeout of the common load balancers, so they never reuse a socket the
  // gateway is closing.
  idleTimeoutMs: whole(100, 3_600_000).default(65_000),
  logRequests: bool.default(false),
  logLevel: z.string().transform((v) => v.toLowerCase())
    .pipe(z.enum(LOG_LEVELS, { error: (iss) => `{where} must be one of ${LOG_LEVELS.join(', ')}, got "${String(iss.input)}"` }))
    .default('info'),
  scriptAliasSecret: z.string().optional(),
  workers: z.string()
    .refine((v) => v === 'auto' || (/^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 256), { error: (iss) => `{where} must be a whole number from 1 to 256, or auto, got "${String(iss.input)}"` })
    .transform((v) => (v === 'auto' ? availableParallelism() : Number(v)))
    .default(1),
}).superRefine((c, ctx) => {
  if (c.redisPassword !== undefined && c.redisUser === undefined) {
    ctx.addIssue({ code: 'custom', message: 'GATEWAY_REDIS_PASSWORD needs GATEWAY_REDIS_USER', input: c });
  }
  if (typeof c.headersTimeoutMs === 'number' && typeof c.bodyTimeoutMs === 'number' && c.headersTimeoutMs > c.bodyTimeoutMs) {
    ctx.addIssue({
      code: 'custom', input: c,
      message: `GATEWAY_HEADERS_TIMEOUT_MS (${c.headersTimeoutMs}) must not be longer than GATEWAY_BODY_TIMEOUT_MS (${c.bodyTimeoutMs}), which counts the headers too`,
    });
  }
});

/** A Redis URL taken apart: plain, Sentinel (`redis+sentinel://h1:26379,h2:26379/mymaster`) or Cluster (`redis+cluster://h1:7000,h2:7001`). */
export interface RedisTarget {
  kind: 'standalone' | 'sentinel' | 'cluster';
  tls: boolean;
  username?: string;
  password?: string;
  hosts: { host: string; port: number }[];
  /** Sentinel master name. */
  masterName?: string;
  db: number;
}

const REDIS_URL_RE = /^(rediss?)(?:\+(sentinel|cluster))?:\/\/(?:([^@/]*)@)?([^/?#]+)(?:\/([^?#]*))?(?:\?[^#]*)?$/;

/** Parses and checks a Redis URL; the message never repeats the URL (it may hold a password). */
export function parseRedisUrl(url: string, where: string): RedisTarget {
  const m = REDIS_URL_RE.exec(url);
  if (!m) {
    throw new ConfigError(`${where} must look like redis://[:password@]host:port[/db], rediss://…, redis+sentinel://host:port[,host:port]/master or redis+cluster://host:port[,host:port]`);
  }
  const [, scheme, mode, auth, hostList = '', path = ''] = m;
  const hosts = hostList.split(',').map((h) => {
    const hm = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d+))?$/.exec(h);
    if (!hm?.[1]) throw new ConfigError(`${where} has an invalid host list`);
    return { host: hm[1].replace(/^\[|\]$/g, ''), port: hm[2] ? Number(hm[2]) : mode === 'sentinel' ? 26379 : 6379 };
  });
  let username: string | undefined;
  let password: string | undefined;
  if (auth) {
    const i = auth.indexOf(':');
    username = decodeURIComponent(i === -1 ? auth : auth.slice(0, i)) || undefined;
    password = i === -1 ? undefined : decodeURIComponent(auth.slice(i + 1));
  }
  const segments = path.split('/').filter(Boolean);
  let masterName: string | undefined;
  if (mode === 'sentinel') {
    masterName = segments.shift();
    if (!masterName) throw new ConfigError(`${where}: a sentinel URL needs the master name as its path (redis+sentinel://host:26379/mymaster)`);
  }
  const dbText = segments[0] ?? '0';
  if (!/^\d+$/.test(dbText)) throw new ConfigError(`${where}: the database must be a number`);
  if (mode === 'cluster' && dbText !== '0') throw new ConfigError(`${where}: Redis Cluster has only database 0`);
  return {
    kind: mode === 'sentinel' ? 'sentinel' : mode === 'cluster' ? 'cluster' : 'standalone',
    tls: scheme === 'rediss',
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    hosts,
    ...(masterName !== undefined ? { masterName } : {}),
    db: Number(dbText),
  };
}

export function checkRedisUrl(url: string, where: string): string {
  parseRedisUrl(url, where);
  return url;
}

function commandList(field: string) {
  const error = `{where}${field} must be an array of command names like ["GET", "SCRIPT LOAD"]`;
  return z.array(z.string({ error }).refine((v) => v.trim() !== '', { error }), { error })
    .transform((list) => list.map((v) => v.trim().toUpperCase().replace(/\s+/g, ' ')));
}

/** An entry of our tokens file; `redisUrl` also answers to SRH's and snake-case names. */
const OUR_ENTRY = z.preprocess(
  (e) => (isRecord(e) && e['redisUrl'] === undefined ? { ...e, redisUrl: e['redis_url'] ?? e['connection_string'] } : e),
  z.object({
    token: token('{where}: token must be a non-empty string'),
    redisUrl: z.string({ error: '{where}.redisUrl must be a string' }).pipe(redisUrl('.redisUrl')).optional(),
    readonly: z.boolean({ error: '{where}.readonly must be true or false' }).default(false),
    name: z.string({ error: '{where}.name must be a string' }).optional(),
    allow: commandList('.allow').optional(),
    deny: commandList('.deny').optional(),
    redisUser: userName('{where}.redisUser').optional(),
    redisPassword: z.string({ error: '{where}.redisPassword must be a string' }).optional(),
  }, { error: '{where} must be an object' }).superRefine((e, ctx) => {
    if (e.redisPassword !== undefined && e.redisUser === undefined) ctx.addIssue({ code: 'custom', message: '{where}.redisPassword needs {where}.redisUser', input: e });
  }),
);

const SRH_SHAPE = '{where} must be {"srh_id", "connection_string", "max_connections"} (SRH shape) or the file must be {"tokens": [...]}';
const SRH_ENTRY = z.object({
  srh_id: z.unknown().optional(),
  connection_string: z.string({ error: SRH_SHAPE }).pipe(redisUrl('.connection_string')),
}, { error: SRH_SHAPE });

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parsed<T extends z.ZodType>(schema: T, value: unknown, where: string): z.output<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw configError(r.error, () => where);
  return r.data;
}

/**
 * Reads a tokens file. Two shapes are accepted:
 * - ours: `{ "tokens": [{ "name", "token", "redisUrl", "readonly", "allow", "deny", "redisUser", "redisPassword" }] }`
 * - SRH's: `{ "<token>": { "srh_id", "connection_string", "max_connections" } }`
 */
export function parseTokensFile(text: string, file: string, defaultRedisUrl: string): TokenPolicy[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError(`tokens file ${file} is not valid JSON`, { cause });
  }
  if (!isRecord(doc)) throw new ConfigError(`tokens file ${file} must hold a JSON object`);
  const out: TokenPolicy[] = [];
  const list = doc['tokens'];
  if (Array.isArray(list)) {
    list.forEach((raw: unknown, i: number) => {
      const e = parsed(OUR_ENTRY, raw, `tokens file ${file}, tokens[${i}]`);
      out.push({
        name: e.name ?? `token${i}`,
        token: e.token,
        redisUrl: e.redisUrl ?? defaultRedisUrl,
        readonly: e.readonly,
        ...(e.allow ? { allow: e.allow } : {}),
        ...(e.deny ? { deny: e.deny } : {}),
        ...(e.redisUser !== undefined ? { redisUser: { name: e.redisUser, ...(e.redisPassword !== undefined ? { password: e.redisPassword } : {}) } } : {}),
      });
    });
  } else {
    for (const [key, raw] of Object.entries(doc)) {
      const where = `tokens file ${file}, entry ${out.length}`;
      const t = parsed(token('{where}: token must be a non-empty string'), key, where);
      const e = parsed(SRH_ENTRY, raw, where);
      const name = typeof e.srh_id === 'string' ? e.srh_id : `token${out.length}`;
      out.push({ name, token: t, redisUrl: e.connection_string, readonly: false });
    }
  }
  if (out.length === 0) throw new ConfigError(`tokens file ${file} defines no tokens`);
  return out;
}

/** Builds the configuration from environment variables; throws {@link ConfigError}. */
export function loadConfig(env: Env): GatewayConfig {
  const { values, from } = resolve(env);
  const r = ENV.safeParse(values);
  if (!r.success) throw configError(r.error, (path) => from[path[0] as Setting] ?? String(path[0] ?? ''));
  const { srhMode, token: single, redisUser, redisPassword, tokensFile: fileVar, ...settings } = r.data;

  const tokens: TokenPolicy[] = [];
  if (single !== undefined) {
    const user = redisUser !== undefined ? { redisUser: { name: redisUser, ...(redisPassword !== undefined ? { password: redisPassword } : {}) } } : {};
    tokens.push({ name: 'default', token: single, redisUrl: settings.redisUrl, readonly: false, ...user });
  }
  const tokensFile = fileVar ?? (srhMode === 'file' ? 'srh-config/tokens.json' : undefined);
  if (tokensFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(tokensFile, 'utf8');
    } catch (cause) {
      const code = isRecord(cause) && typeof cause['code'] === 'string' ? ` (${cause['code']})` : '';
      throw new ConfigError(`cannot read tokens file ${tokensFile}${code}`, { cause });
    }
    tokens.push(...parseTokensFile(text, tokensFile, settings.redisUrl));
  }
  if (tokens.length === 0) {
    throw new ConfigError('no token configured: set GATEWAY_TOKEN (or GATEWAY_TOKENS_FILE, or SRH_TOKEN)');
  }
  const seen = new Set<string>();
  for (const t of tokens) {
    if (seen.has(t.token)) throw new ConfigError(`token "${t.name}" is defined twice`);
    seen.add(t.token);
  }
  return {
    ...settings,
    tokens,
    scriptAliasSecret: settings.scriptAliasSecret
      ?? createHash('sha256').update(`edge-redis script aliases\0${tokens.map((t) => t.token).sort().join('\0')}`).digest('hex'),
  };
}

/** A Redis URL safe to print: the password is masked. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z+]+:\/\/)[^@/]*@/, (_all, scheme: string) => `${scheme}***@`);
}
