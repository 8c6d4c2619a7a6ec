/**
 * Gateway configuration, read once from the environment.
 *
 * Every problem becomes a {@link ConfigError} whose message is one line naming the variable and what
 * is wrong with it, so `main.ts` can print it and exit non-zero without a stack trace.
 * SRH's variable names and tokens-file shape are accepted as aliases, so moving from SRH is a
 * one-line change in a compose file.
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';

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
  logRequests: boolean;
  /**
   * Signs the script aliases shared in Redis (scripts.ts). `GATEWAY_SCRIPT_ALIAS_SECRET`, else
   * derived from every configured token, so replicas with the same tokens agree without setting it.
   */
  scriptAliasSecret: string;
  /** Processes serving the port (`GATEWAY_WORKERS`, `auto` = available cores); 1 = no cluster. */
  workers: number;
}

type Env = Record<string, string | undefined>;

const DEFAULTS = {
  redisUrl: 'redis://127.0.0.1:6379',
  host: '127.0.0.1',
  port: 8079,
  maxBodyBytes: 10 * 1024 * 1024,
  maxPipelineCommands: 10_000,
  timeoutMs: 30_000,
  keepaliveMs: 15_000,
  maxDedicatedConnections: 1_000,
  maxReplyBytes: 32 * 1024 * 1024,
  maxStreamBufferBytes: 4 * 1024 * 1024,
  maxSockets: 4_096,
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  // Above the 60 s idle timeout of the common load balancers, so they never reuse a socket the
  // gateway is closing.
  idleTimeoutMs: 65_000,
} as const;

/** First non-empty value among the names (our name first, then SRH's alias). */
function pick(env: Env, ...names: string[]): { name: string; value: string } | undefined {
  for (const name of names) {
    const value = env[name];
    if (value !== undefined && value.trim() !== '') return { name, value: value.trim() };
  }
  return undefined;
}

function int(env: Env, fallback: number, min: number, max: number, ...names: string[]): number {
  const found = pick(env, ...names);
  if (!found) return fallback;
  if (!/^\d+$/.test(found.value)) {
    throw new ConfigError(`${found.name} must be a whole number, got "${found.value}"`);
  }
  const n = Number(found.value);
  if (n < min || n > max) throw new ConfigError(`${found.name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function bool(env: Env, fallback: boolean, name: string): boolean {
  const found = pick(env, name);
  if (!found) return fallback;
  const v = found.value.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(`${name} must be true or false, got "${found.value}"`);
}

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

function checkToken(token: unknown, where: string): string {
  if (typeof token !== 'string' || token.length === 0) throw new ConfigError(`${where}: token must be a non-empty string`);
  if (/\s/.test(token)) throw new ConfigError(`${where}: token must not contain whitespace`);
  return token;
}

function commandList(value: unknown, where: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string' && v.trim() !== '')) {
    throw new ConfigError(`${where} must be an array of command names like ["GET", "SCRIPT LOAD"]`);
  }
  return value.map((v) => v.trim().toUpperCase().replace(/\s+/g, ' '));
}

/** An operator-managed Redis user; `names` are how the user and password fields are called where they came from. */
function redisUser(name: unknown, password: unknown, names: { user: string; password: string }): { redisUser?: { name: string; password?: string } } {
  if (name === undefined) {
    if (password !== undefined) throw new ConfigError(`${names.password} needs ${names.user}`);
    return {};
  }
  if (typeof name !== 'string' || name === '' || /\s/.test(name)) throw new ConfigError(`${names.user} must be a Redis user name (no whitespace)`);
  if (password !== undefined && typeof password !== 'string') throw new ConfigError(`${names.password} must be a string`);
  return { redisUser: { name, ...(password !== undefined ? { password } : {}) } };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
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
  if (Array.isArray(doc['tokens'])) {
    doc['tokens'].forEach((entry: unknown, i: number) => {
      const where = `tokens file ${file}, tokens[${i}]`;
      if (!isRecord(entry)) throw new ConfigError(`${where} must be an object`);
      const token = checkToken(entry['token'], where);
      const rawUrl = entry['redisUrl'] ?? entry['redis_url'] ?? entry['connection_string'] ?? defaultRedisUrl;
      if (typeof rawUrl !== 'string') throw new ConfigError(`${where}.redisUrl must be a string`);
      const readonly = entry['readonly'] ?? false;
      if (typeof readonly !== 'boolean') throw new ConfigError(`${where}.readonly must be true or false`);
      const name = entry['name'] ?? `token${i}`;
      if (typeof name !== 'string') throw new ConfigError(`${where}.name must be a string`);
      const allow = commandList(entry['allow'], `${where}.allow`);
      const deny = commandList(entry['deny'], `${where}.deny`);
      out.push({
        name,
        token,
        redisUrl: checkRedisUrl(rawUrl, `${where}.redisUrl`),
        readonly,
        ...(allow ? { allow } : {}),
        ...(deny ? { deny } : {}),
        ...redisUser(entry['redisUser'], entry['redisPassword'], { user: `${where}.redisUser`, password: `${where}.redisPassword` }),
      });
    });
  } else {
    for (const [token, entry] of Object.entries(doc)) {
      const where = `tokens file ${file}, entry ${out.length}`;
      checkToken(token, where);
      if (!isRecord(entry) || typeof entry['connection_string'] !== 'string') {
        throw new ConfigError(`${where} must be {"srh_id", "connection_string", "max_connections"} (SRH shape) or the file must be {"tokens": [...]}`);
      }
      const name = typeof entry['srh_id'] === 'string' ? entry['srh_id'] : `token${out.length}`;
      out.push({ name, token, redisUrl: checkRedisUrl(entry['connection_string'], `${where}.connection_string`), readonly: false });
    }
  }
  if (out.length === 0) throw new ConfigError(`tokens file ${file} defines no tokens`);
  return out;
}

/** Builds the configuration from environment variables; throws {@link ConfigError}. */
export function loadConfig(env: Env): GatewayConfig {
  const srhMode = pick(env, 'SRH_MODE')?.value.toLowerCase();
  if (srhMode !== undefined && srhMode !== 'env' && srhMode !== 'file') {
    throw new ConfigError(`SRH_MODE must be "env" or "file", got "${srhMode}"`);
  }
  const redisUrl = checkRedisUrl(pick(env, 'REDIS_URL', 'SRH_CONNECTION_STRING')?.value ?? DEFAULTS.redisUrl, 'REDIS_URL');
  const tokens: TokenPolicy[] = [];
  const single = pick(env, 'GATEWAY_TOKEN', 'SRH_TOKEN');
  if (single) {
    const user = redisUser(pick(env, 'GATEWAY_REDIS_USER')?.value, pick(env, 'GATEWAY_REDIS_PASSWORD')?.value, { user: 'GATEWAY_REDIS_USER', password: 'GATEWAY_REDIS_PASSWORD' });
    tokens.push({ name: 'default', token: checkToken(single.value, single.name), redisUrl, readonly: false, ...user });
  }

  let tokensFile = pick(env, 'GATEWAY_TOKENS_FILE', 'SRH_CONFIG_FILE')?.value;
  if (tokensFile === undefined && srhMode === 'file') tokensFile = 'srh-config/tokens.json';
  if (tokensFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(tokensFile, 'utf8');
    } catch (cause) {
      const code = isRecord(cause) && typeof cause['code'] === 'string' ? ` (${cause['code']})` : '';
      throw new ConfigError(`cannot read tokens file ${tokensFile}${code}`, { cause });
    }
    tokens.push(...parseTokensFile(text, tokensFile, redisUrl));
  }
  if (tokens.length === 0) {
    throw new ConfigError('no token configured: set GATEWAY_TOKEN (or GATEWAY_TOKENS_FILE, or SRH_TOKEN)');
  }
  const seen = new Set<string>();
  for (const t of tokens) {
    if (seen.has(t.token)) throw new ConfigError(`token "${t.name}" is defined twice`);
    seen.add(t.token);
  }

  let basePath = pick(env, 'GATEWAY_BASE_PATH')?.value ?? '';
  basePath = basePath.replace(/\/+$/, '');
  if (basePath !== '' && !/^\/[\w\-./]*$/.test(basePath)) {
    throw new ConfigError(`GATEWAY_BASE_PATH must look like /prefix, got "${basePath}"`);
  }

  const headersTimeoutMs = int(env, DEFAULTS.headersTimeoutMs, 100, 600_000, 'GATEWAY_HEADERS_TIMEOUT_MS');
  const bodyTimeoutMs = int(env, DEFAULTS.bodyTimeoutMs, 100, 3_600_000, 'GATEWAY_BODY_TIMEOUT_MS');
  if (headersTimeoutMs > bodyTimeoutMs) {
    throw new ConfigError(`GATEWAY_HEADERS_TIMEOUT_MS (${headersTimeoutMs}) must not be longer than GATEWAY_BODY_TIMEOUT_MS (${bodyTimeoutMs}), which counts the headers too`);
  }

  return {
    host: pick(env, 'GATEWAY_HOST')?.value ?? DEFAULTS.host,
    port: int(env, DEFAULTS.port, 0, 65_535, 'GATEWAY_PORT', 'SRH_PORT'),
    redisUrl,
    tokens,
    allowAdminCommands: bool(env, false, 'GATEWAY_ALLOW_ADMIN_COMMANDS'),
    latencyMs: int(env, 0, 0, 60_000, 'GATEWAY_LATENCY_MS'),
    maxBodyBytes: int(env, DEFAULTS.maxBodyBytes, 1, 1024 * 1024 * 1024, 'GATEWAY_MAX_BODY_BYTES'),
    maxPipelineCommands: int(env, DEFAULTS.maxPipelineCommands, 1, 1_000_000, 'GATEWAY_MAX_PIPELINE_COMMANDS'),
    timeoutMs: int(env, DEFAULTS.timeoutMs, 100, 600_000, 'GATEWAY_TIMEOUT_MS'),
    keepaliveMs: int(env, DEFAULTS.keepaliveMs, 100, 600_000, 'GATEWAY_KEEPALIVE_MS'),
    basePath,
    maxDedicatedConnections: int(env, DEFAULTS.maxDedicatedConnections, 1, 100_000, 'GATEWAY_MAX_CONNECTIONS', 'SRH_MAX_CONNECTIONS'),
    maxReplyBytes: int(env, DEFAULTS.maxReplyBytes, 1_024, 1024 * 1024 * 1024, 'GATEWAY_MAX_REPLY_BYTES'),
    maxStreamBufferBytes: int(env, DEFAULTS.maxStreamBufferBytes, 1_024, 1024 * 1024 * 1024, 'GATEWAY_MAX_STREAM_BUFFER_BYTES'),
    maxSockets: int(env, DEFAULTS.maxSockets, 1, 1_000_000, 'GATEWAY_MAX_SOCKETS'),
    headersTimeoutMs,
    bodyTimeoutMs,
    idleTimeoutMs: int(env, DEFAULTS.idleTimeoutMs, 100, 3_600_000, 'GATEWAY_IDLE_TIMEOUT_MS'),
    logRequests: bool(env, false, 'GATEWAY_LOG_REQUESTS'),
    scriptAliasSecret: pick(env, 'GATEWAY_SCRIPT_ALIAS_SECRET')?.value
      ?? createHash('sha256').update(`edge-redis script aliases\0${tokens.map((t) => t.token).sort().join('\0')}`).digest('hex'),
    workers: workers(env),
  };
}

function workers(env: Env): number {
  const raw = pick(env, 'GATEWAY_WORKERS')?.value?.trim();
  if (raw === undefined || raw === '') return 1;
  if (raw === 'auto') return availableParallelism();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new ConfigError(`GATEWAY_WORKERS must be a whole number from 1 to 256, or auto, got "${raw}"`);
  return n;
}

/** A Redis URL safe to print: the password is masked. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z+]+:\/\/)[^@/]*@/, (_all, scheme: string) => `${scheme}***@`);
}
