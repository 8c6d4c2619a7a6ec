/**
 * The Redis REST gateway: an HTTP server speaking the Upstash REST protocol in front of Redis.
 * Pipeline per request: route → authenticate → read body → validate (commands.ts) → execute
 * (upstream.ts) → encode (encode.ts). See ../README.md for configuration and the differences
 * from Upstash.
 */
import { hash, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { AclUsers } from './acl.ts';
import { checkCommands, named, parseBatch, parseSingle, RequestError, type Command } from './commands.ts';
import { redactUrl, type GatewayConfig, type TokenPolicy } from './config.ts';
import { DeadlineError, isReplyError, UnavailableError, type Outcome } from './connect.ts';
import { errorEntry, errorText, resultEntry } from './encode.ts';
import { runBatch, runTransaction, type BatchContext } from './execute.ts';
import { listen, type RunningGateway } from './listen.ts';
import { createLogger, errorFields, type Logger } from './log.ts';
import { Metrics, type MetricsSnapshot } from './metrics.ts';
import { percentDecode, splitTarget } from './paths.ts';
import { RequestIds } from './request-id.ts';
import { serveSubscription, type SubscriptionKind } from './sse.ts';
import { Upstream, type TokenRuntime } from './upstream.ts';

export type { RunningGateway } from './listen.ts';

export interface GatewayOptions {
  /**
   * Receives each JSON log line (without its newline) instead of stdout; tests read them. Never
   * tokens, Authorization, command arguments or Redis error text (log.ts).
   */
  log?: (line: string) => void;
  /** A logger to use as is (main.ts shares its own); `log` and GATEWAY_LOG_LEVEL are then ignored. */
  logger?: Logger;
  /** What `/metrics` answers instead of this process's own text (GATEWAY_WORKERS: the whole gateway's). */
  metrics?: () => Promise<string>;
}

export interface StartedGateway extends RunningGateway {
  /** This process's counts, as data (GATEWAY_WORKERS merges them, workers.ts). */
  metricsSnapshot(): Promise<MetricsSnapshot>;
  /** This gateway's prom-client registries (process defaults, then its own), e.g. for `AggregatorRegistry.setRegistries`. */
  readonly metricsRegistries: Metrics['registries'];
}

/** How long `/readyz` waits for Redis's PONG: a probe wants a quick no rather than a slow yes. */
const READY_PING_MS = 500;

type Route = '/' | '/pipeline' | '/multi-exec' | '/subscribe' | '/psubscribe' | 'path' | '/healthz' | '/readyz' | '/metrics' | 'other';

const CORS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'upstash-sync-token, x-request-id',
};

/**
 * Token lookup in constant time whatever the number of tokens: the map is keyed by SHA-256 of a
 * per-boot random salt and the token, so what a lookup compares is a digest an attacker cannot
 * steer toward a real token byte by byte (the timing of the map's string compare says nothing
 * useful). Salted SHA-256 rather than an HMAC: `createHmac` builds a key object per call, which
 * was a quarter of the gateway's busy time in the single-GET profile; one-shot `crypto.hash` is the
 * cheapest digest Node has, and a lookup key needs no more than a salted hash.
 */
class TokenTable {
  readonly #salt = randomBytes(32).toString('hex');
  readonly #map = new Map<string, TokenPolicy>();
  constructor(tokens: readonly TokenPolicy[]) {
    for (const t of tokens) {
      const key = this.#digest(t.token);
      if (!this.#map.has(key)) this.#map.set(key, t);
    }
  }
  #digest(token: string): string {
    return hash('sha256', this.#salt + token, 'base64');
  }
  find(token: string): TokenPolicy | undefined {
    return this.#map.get(this.#digest(token));
  }
}

class Gateway {
  readonly config: GatewayConfig;
  readonly metrics = new Metrics();
  readonly upstreams = new Map<string, Upstream>();
  readonly #tokens: TokenTable;
  readonly #log: Logger;
  readonly #ids = new RequestIds();
  /** The access line's level (`info` with GATEWAY_LOG_REQUESTS, else `debug`), or undefined when that level is off. */
  readonly #access: 'info' | 'debug' | undefined;
  readonly #bootId = randomBytes(6).toString('hex');
  readonly #streams = new Set<ServerResponse>();
  #seq = 0;
  /** Set on shutdown: answers then carry `connection: close`, so keep-alive sockets do not linger. */
  closing = false;

  readonly #metricsText: (() => Promise<string>) | undefined;

  constructor(config: GatewayConfig, log: Logger, metricsText?: () => Promise<string>) {
    this.config = config;
    this.#log = log;
    const access = config.logRequests ? 'info' : 'debug';
    this.#access = log.isLevelEnabled(access) ? access : undefined;
    this.#metricsText = metricsText;
    this.#tokens = new TokenTable(config.tokens);
    // One password per gateway process for the ACL users it makes (acl.ts).
    const acl = new AclUsers(randomBytes(32).toString('hex'));
    for (const url of new Set([config.redisUrl, ...config.tokens.map((t) => t.redisUrl)])) {
      const tokens = config.tokens.filter((t) => t.redisUrl === url);
      this.upstreams.set(url, new Upstream(url, { tokens, allowAdminCommands: config.allowAdminCommands, acl, log, scriptAliasSecret: config.scriptAliasSecret }));
    }
    this.metrics.gauge('gateway_sse_streams', 'Open Server-Sent Events streams.', () => this.#streams.size);
    this.metrics.gauge('gateway_redis_up', 'Whether the default Redis answers (1) or not (0).', () => (this.#upstream(config.redisUrl).up ? 1 : 0), 'min');
  }

  #upstream(url: string): Upstream {
    const u = this.upstreams.get(url);
    if (!u) throw new Error(`no upstream for ${redactUrl(url)}`);
    return u;
  }

  /** The token's policy, from `Authorization: Bearer …` or `?_token=`. */
  authenticate(req: IncomingMessage, query: URLSearchParams): TokenPolicy | undefined {
    const header = req.headers.authorization;
    const bearer = header?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
    const given = bearer ?? query.get('_token') ?? undefined;
    if (!given) return undefined;
    return this.#tokens.find(given);
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    let route: Route = 'other';
    const reqId = this.#ids.from(req.headers['x-request-id']);
    const headers: Record<string, string> = { ...CORS, 'upstash-sync-token': `${this.#bootId}-${++this.#seq}`, 'x-request-id': reqId };
    const deadline = Date.now() + this.config.timeoutMs;
    const write = (status: number, body: string, contentType: string) => {
      if (res.headersSent || res.destroyed) return;
      res.writeHead(status, {
        ...headers,
        'content-type': contentType,
        'content-length': Buffer.byteLength(body),
        ...(this.closing ? { connection: 'close' } : {}),
      });
      res.end(body);
    };
    // GATEWAY_LATENCY_MS (a test knob) delays every answer; without it, no timer and no extra await.
    const latency = this.config.latencyMs;
    const send = (status: number, body: string, contentType = 'application/json'): Promise<void> | void => {
      if (latency > 0) return sleep(latency).then(() => write(status, body, contentType));
      write(status, body, contentType);
    };
    try {
      const target = splitTarget(req.url ?? '/', this.config.basePath);
      const method = req.method ?? 'GET';
      if (target === undefined) {
        req.resume();
        throw new RequestError(404, `ERR not found: every route is under ${this.config.basePath} (GATEWAY_BASE_PATH)`);
      }
      const { path, query } = target;

      if (method === 'OPTIONS') {
        route = 'other';
        res.writeHead(204, {
          ...headers,
          'access-control-allow-methods': 'GET, POST, OPTIONS',
          'access-control-allow-headers': 'authorization, content-type, upstash-encoding, upstash-sync-token, upstash-telemetry-runtime, upstash-telemetry-platform, upstash-telemetry-sdk, upstash-telemetry-retry',
          'access-control-max-age': '86400',
        });
        res.end();
        return;
      }
      if (path === '/healthz' && method === 'GET') {
        route = '/healthz';
        const up = this.#upstream(this.config.redisUrl);
        try {
          await up.ping(Math.min(2_000, this.config.timeoutMs));
          await send(200, JSON.stringify({ status: 'ok', redis: 'up' }));
        } catch {
          await send(503, JSON.stringify({ status: 'unavailable', redis: 'down', error: 'Redis does not answer' }));
        }
        return;
      }
      if (path === '/readyz' && method === 'GET') {
        // Readiness, for load balancers: not while shutting down, and only when Redis answers soon.
        route = '/readyz';
        if (this.closing) {
          await send(503, JSON.stringify({ status: 'unavailable', ready: false, reason: 'shutting down' }));
          return;
        }
        try {
          await this.#upstream(this.config.redisUrl).ping(Math.min(READY_PING_MS, this.config.timeoutMs));
          await send(200, JSON.stringify({ status: 'ok', ready: true, redis: 'up' }));
        } catch {
          await send(503, JSON.stringify({ status: 'unavailable', ready: false, redis: 'down', reason: 'Redis does not answer' }));
        }
        return;
      }
      if (path === '/metrics' && method === 'GET') {
        route = '/metrics';
        const text = this.#metricsText ? await this.#metricsText() : await this.metrics.render();
        await send(200, text, this.metrics.contentType);
        return;
      }
      if (method !== 'POST' && method !== 'GET') throw new RequestError(405, `ERR method ${method} is not supported; use POST`);

      const segments = path.split('/').slice(1);
      const head = segments[0] ?? '';
      route = head === '' ? '/' : head === 'pipeline' ? '/pipeline' : head === 'multi-exec' ? '/multi-exec'
        : head === 'subscribe' ? '/subscribe' : head === 'psubscribe' ? '/psubscribe' : 'path';

      const token = this.authenticate(req, query);
      if (!token) {
        // Drain the body so the client reads our answer instead of a reset connection.
        req.resume();
        throw new RequestError(401, 'WRONGPASS invalid or missing auth token');
      }
      const upstream = this.#upstream(token.redisUrl);
      const runtime = upstream.forToken(token);
      if (!runtime) {
        req.resume();
        throw new UnavailableError('the command table of this Redis has not been read yet');
      }
      const base64 = String(req.headers['upstash-encoding'] ?? '').toLowerCase() === 'base64';
      const ctx: BatchContext = {
        upstream, runtime, scripts: upstream.scripts, metrics: this.metrics, deadline,
        timeoutMs: this.config.timeoutMs, maxReplyBytes: this.config.maxReplyBytes, maxDedicatedConnections: this.config.maxDedicatedConnections,
      };

      if (route === '/subscribe' || route === '/psubscribe') {
        await this.#readBody(req); // `[]`, ignored
        const kind: SubscriptionKind = route === '/subscribe' ? 'subscribe' : 'psubscribe';
        const name = percentDecode(segments.slice(1).join('/'));
        if (name.length === 0) throw new RequestError(400, `ERR ${route}/<name> needs a channel or pattern`);
        checkCommands([{ name: kind.toUpperCase(), args: [name] }], runtime.policy, this.config.timeoutMs, 'subscription');
        if (upstream.dedicated.value >= this.config.maxDedicatedConnections) {
          throw new RequestError(503, `ERR too many open subscriptions (GATEWAY_MAX_CONNECTIONS=${this.config.maxDedicatedConnections})`);
        }
        this.metrics.command(kind);
        if (this.config.latencyMs > 0) await sleep(this.config.latencyMs);
        await serveSubscription(req, res, {
          kind, target: name, lane: runtime.lane, headers, keepaliveMs: this.config.keepaliveMs, maxBufferBytes: this.config.maxStreamBufferBytes,
          onOpen: () => this.#streams.add(res),
          onClose: () => this.#streams.delete(res),
        });
        if (res.headersSent) this.metrics.request(route, 200, Number(process.hrtime.bigint() - started) / 1e9);
        return;
      }

      const body = await this.#readBody(req);
      if (route === '/') {
        if (method !== 'POST') throw new RequestError(405, 'ERR use POST with a JSON command like ["get","key"]');
        const [outcome] = await runBatch([parseSingle(body)], ctx);
        if (!outcome) throw new Error('no outcome');
        await (outcome.ok ? send(200, resultEntry(outcome.value, base64)) : send(400, errorEntry(errorText(outcome.error))));
      } else if (route === '/pipeline') {
        const outcomes = await runBatch(parseBatch(body, this.config.maxPipelineCommands), ctx);
        await send(200, entries(outcomes, base64));
      } else if (route === '/multi-exec') {
        let outcomes: Outcome[];
        try {
          outcomes = await runTransaction(parseBatch(body, this.config.maxPipelineCommands), ctx);
        } catch (err) {
          if (isReplyError(err)) {
            // EXECABORT alone does not say why; ioredis keeps the queuing errors that caused it.
            const previous = (err as { previousErrors?: unknown }).previousErrors;
            const first = Array.isArray(previous) && previous[0] instanceof Error ? `: ${previous[0].message}` : '';
            await send(400, errorEntry(`${errorText(err)}${first}`));
            return;
          }
          throw err;
        }
        await send(200, entries(outcomes, base64));
      } else {
        // Path form for curl users: /set/key/value, a POST body being the last argument.
        const parts = segments.filter((s, i) => i < segments.length - 1 || s !== '').map(percentDecode);
        const name = parts[0]?.toString('utf8');
        if (!name) throw new RequestError(400, 'ERR no command in the path');
        const cmd: Command = named(name, parts.slice(1));
        if (method === 'POST' && body.length > 0) cmd.args.push(body);
        const [outcome] = await runBatch([cmd], ctx);
        if (!outcome) throw new Error('no outcome');
        await (outcome.ok ? send(200, resultEntry(outcome.value, base64)) : send(400, errorEntry(errorText(outcome.error))));
      }
    } catch (err) {
      if (err instanceof RequestError) {
        await send(err.status, errorEntry(err.message));
      } else if (err instanceof DeadlineError) {
        await send(504, errorEntry(`ERR gateway deadline of ${this.config.timeoutMs} ms passed before Redis answered`));
      } else if (err instanceof UnavailableError) {
        this.#log.error({ reqId, route, err: errorFields(err.cause ?? err) }, 'request failed: Redis unavailable');
        await send(503, errorEntry('ERR Redis is unavailable: the gateway cannot reach it right now; try again'));
      } else if (req.destroyed || isAborted(err)) {
        // The client went away (or a body timeout closed its socket): nobody to answer.
      } else {
        this.#log.error({ reqId, route, err: errorFields(err) }, 'request failed: internal error');
        await send(500, errorEntry('ERR internal gateway error'));
      }
    } finally {
      if (!this.#streams.has(res)) this.metrics.request(route, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9);
      if (this.#access) this.#log[this.#access]({ reqId, method: req.method, route, status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'request');
    }
  }

  /**
   * Reads the whole body, refusing more than the limit with 413 (after draining what was sent).
   * Plain 'data'/'end' listeners: the async iterator cost a few % of the profile per request.
   */
  #readBody(req: IncomingMessage): Promise<Buffer> {
    const max = this.config.maxBodyBytes;
    const declared = Number(req.headers['content-length'] ?? NaN);
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let over = Number.isFinite(declared) && declared > max;
      const onData = (buf: Buffer) => {
        size += buf.length;
        if (size > max) over = true;
        if (!over) chunks.push(buf);
        else if (size > max * 4 + 1024 * 1024) {
          cleanup();
          req.destroy();
          reject(new RequestError(413, tooLarge(max)));
        }
      };
      const onEnd = () => {
        cleanup();
        if (over) reject(new RequestError(413, tooLarge(max)));
        else resolve(chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks, size));
      };
      const onError = (err: Error) => {
        cleanup();
        reject(err);
      };
      const onClose = () => {
        cleanup();
        reject(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
      };
      const cleanup = () => {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('error', onError);
        req.off('close', onClose);
      };
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('error', onError);
      req.on('close', onClose);
    });
  }

  /** Ends open SSE streams so a graceful close does not wait on them. */
  endStreams(): void {
    for (const res of this.#streams) res.end();
  }

  async close(): Promise<void> {
    await Promise.all([...this.upstreams.values()].map((u) => u.close()));
  }
}

function tooLarge(max: number): string {
  return `ERR the request body is over the ${max} byte limit (GATEWAY_MAX_BODY_BYTES)`;
}

function entries(outcomes: Outcome[], base64: boolean): string {
  return `[${outcomes.map((o) => (o.ok ? resultEntry(o.value, base64) : errorEntry(errorText(o.error)))).join(',')}]`;
}

function isAborted(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (err instanceof Error && err.message === 'aborted');
}

/** Starts the gateway; resolves once it listens. Port 0 picks a free port. */
export async function startGateway(config: GatewayConfig, options: GatewayOptions = {}): Promise<StartedGateway> {
  const log = options.logger ?? createLogger(config.logLevel, options.log);
  const gateway = new Gateway(config, log, options.metrics);
  await Promise.all([...gateway.upstreams.values()].map((u) => u.ready(2_000)));
  const running = await listen(config, {
    handle: (req, res) => void gateway.handle(req, res),
    onClosing: () => {
      gateway.closing = true;
      gateway.endStreams();
    },
    onClosed: () => gateway.close(),
  });
  return { ...running, metricsSnapshot: () => gateway.metrics.snapshot(), metricsRegistries: gateway.metrics.registries };
}
