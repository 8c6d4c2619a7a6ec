/**
 * The Redis REST gateway: an HTTP server speaking the Upstash REST protocol in front of Redis.
 * Pipeline per request: route → authenticate → read body → validate (commands.ts) → execute
 * (upstream.ts) → encode (encode.ts). See ../README.md for configuration and the differences
 * from Upstash.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkCommands, metricName, named, parseBatch, parseSingle, RequestError, type Command } from './commands.ts';
import { redactUrl, type GatewayConfig, type TokenPolicy } from './config.ts';
import { errorEntry, errorText, resultEntry } from './encode.ts';
import { Metrics } from './metrics.ts';
import { ScriptAliases } from './scripts.ts';
import { serveSubscription, type SubscriptionKind } from './sse.ts';
import { DeadlineError, describe, isReplyError, UnavailableError, Upstream, withDeadline, type Outcome } from './upstream.ts';

export interface RunningGateway {
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

export interface GatewayOptions {
  /** Where operational lines go (never tokens, never stack traces). Default: stderr. */
  log?: (line: string) => void;
}

type Route = '/' | '/pipeline' | '/multi-exec' | '/subscribe' | '/psubscribe' | 'path' | '/healthz' | '/metrics' | 'other';

const CORS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'upstash-sync-token',
};

function hashToken(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** Percent-decodes a path segment to bytes (binary-safe, unlike decodeURIComponent). */
function percentDecode(segment: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < segment.length; i++) {
    const ch = segment[i];
    if (ch === '%' && /^[0-9a-fA-F]{2}$/.test(segment.slice(i + 1, i + 3))) {
      bytes.push(parseInt(segment.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      for (const b of Buffer.from(ch ?? '', 'utf8')) bytes.push(b);
    }
  }
  return Buffer.from(bytes);
}

class Gateway {
  readonly config: GatewayConfig;
  readonly metrics = new Metrics();
  readonly scripts = new ScriptAliases();
  readonly upstreams = new Map<string, Upstream>();
  readonly #tokens: { hash: Buffer; policy: TokenPolicy }[];
  readonly #log: (line: string) => void;
  readonly #bootId = randomBytes(6).toString('hex');
  readonly #streams = new Set<ServerResponse>();
  #seq = 0;
  /** Set on shutdown: answers then carry `connection: close`, so keep-alive sockets do not linger. */
  closing = false;

  constructor(config: GatewayConfig, log: (line: string) => void) {
    this.config = config;
    this.#log = log;
    this.#tokens = config.tokens.map((policy) => ({ hash: hashToken(policy.token), policy }));
    for (const url of new Set([config.redisUrl, ...config.tokens.map((t) => t.redisUrl)])) {
      this.upstreams.set(url, new Upstream(url, (up, detail) => log(`redis ${redactUrl(url)} is ${up ? 'up' : `down (${detail})`}`)));
    }
    this.metrics.gauge('gateway_sse_streams', () => this.#streams.size);
    this.metrics.gauge('gateway_redis_up', () => (this.#upstream(config.redisUrl).up ? 1 : 0));
  }

  #upstream(url: string): Upstream {
    const u = this.upstreams.get(url);
    if (!u) throw new Error(`no upstream for ${redactUrl(url)}`);
    return u;
  }

  /** Compares against every token, always all of them, in constant time per comparison. */
  authenticate(req: IncomingMessage, url: URL): TokenPolicy | undefined {
    const header = req.headers.authorization;
    const bearer = header?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
    const given = bearer ?? url.searchParams.get('_token') ?? undefined;
    if (!given) return undefined;
    const hash = hashToken(given);
    let found: TokenPolicy | undefined;
    for (const t of this.#tokens) {
      if (timingSafeEqual(hash, t.hash) && !found) found = t.policy;
    }
    return found;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    let route: Route = 'other';
    const headers: Record<string, string> = { ...CORS, 'upstash-sync-token': `${this.#bootId}-${++this.#seq}` };
    const deadline = Date.now() + this.config.timeoutMs;
    const send = async (status: number, body: string, contentType = 'application/json') => {
      if (this.config.latencyMs > 0) await sleep(this.config.latencyMs);
      if (res.headersSent || res.destroyed) return;
      res.writeHead(status, {
        ...headers,
        'content-type': contentType,
        'content-length': Buffer.byteLength(body),
        ...(this.closing ? { connection: 'close' } : {}),
      });
      res.end(body);
    };
    try {
      const url = new URL(req.url ?? '/', 'http://gateway');
      let path = url.pathname;
      const base = this.config.basePath;
      if (base && (path === base || path.startsWith(`${base}/`))) path = path.slice(base.length) || '/';
      const method = req.method ?? 'GET';

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
      if (path === '/metrics' && method === 'GET') {
        route = '/metrics';
        await send(200, this.metrics.render(), 'text/plain; version=0.0.4; charset=utf-8');
        return;
      }
      if (method !== 'POST' && method !== 'GET') throw new RequestError(405, `ERR method ${method} is not supported; use POST`);

      const segments = path.split('/').slice(1);
      const head = segments[0] ?? '';
      route = head === '' ? '/' : head === 'pipeline' ? '/pipeline' : head === 'multi-exec' ? '/multi-exec'
        : head === 'subscribe' ? '/subscribe' : head === 'psubscribe' ? '/psubscribe' : 'path';

      const token = this.authenticate(req, url);
      if (!token) {
        // Drain the body so the client reads our answer instead of a reset connection.
        req.resume();
        throw new RequestError(401, 'WRONGPASS invalid or missing auth token');
      }
      const upstream = this.#upstream(token.redisUrl);
      const base64 = String(req.headers['upstash-encoding'] ?? '').toLowerCase() === 'base64';
      const policy = { allowAdminCommands: this.config.allowAdminCommands, timeoutMs: this.config.timeoutMs };

      if (route === '/subscribe' || route === '/psubscribe') {
        await this.#readBody(req); // `[]`, ignored
        const kind: SubscriptionKind = route === '/subscribe' ? 'subscribe' : 'psubscribe';
        const target = percentDecode(segments.slice(1).join('/'));
        if (target.length === 0) throw new RequestError(400, `ERR ${route}/<name> needs a channel or pattern`);
        checkCommands([{ name: kind.toUpperCase(), args: [target] }], token, policy, 'subscription');
        if (upstream.dedicatedCount >= this.config.maxDedicatedConnections) {
          throw new RequestError(503, `ERR too many open subscriptions (GATEWAY_MAX_CONNECTIONS=${this.config.maxDedicatedConnections})`);
        }
        this.metrics.command(kind);
        if (this.config.latencyMs > 0) await sleep(this.config.latencyMs);
        await serveSubscription(req, res, {
          kind, target, upstream, headers, keepaliveMs: this.config.keepaliveMs,
          onOpen: () => this.#streams.add(res),
          onClose: () => this.#streams.delete(res),
        });
        if (res.headersSent) this.metrics.request(route, 200, Number(process.hrtime.bigint() - started) / 1e9);
        return;
      }

      const body = await this.#readBody(req);
      if (route === '/') {
        if (method !== 'POST') throw new RequestError(405, 'ERR use POST with a JSON command like ["get","key"]');
        const cmd = parseSingle(body);
        const [outcome] = await this.#execute([cmd], token, policy, upstream, deadline);
        if (!outcome) throw new Error('no outcome');
        await (outcome.ok ? send(200, resultEntry(outcome.value, base64)) : send(400, errorEntry(errorText(outcome.error))));
      } else if (route === '/pipeline') {
        const cmds = parseBatch(body, this.config.maxPipelineCommands);
        const outcomes = await this.#execute(cmds, token, policy, upstream, deadline);
        await send(200, `[${outcomes.map((o) => (o.ok ? resultEntry(o.value, base64) : errorEntry(errorText(o.error)))).join(',')}]`);
      } else if (route === '/multi-exec') {
        const cmds = parseBatch(body, this.config.maxPipelineCommands);
        checkCommands(cmds, token, policy, 'transaction');
        const mappers = cmds.map((c) => this.scripts.prepare(c));
        for (const c of cmds) this.metrics.command(metricName(c));
        let outcomes: Outcome[];
        try {
          outcomes = await withDeadline(upstream.transaction(cmds), deadline);
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
        await send(200, `[${outcomes.map((o, i) => (o.ok ? resultEntry(mappers[i]?.(o.value) ?? o.value, base64) : errorEntry(errorText(o.error)))).join(',')}]`);
      } else {
        // Path form for curl users: /set/key/value, a POST body being the last argument.
        const parts = segments.filter((s, i) => i < segments.length - 1 || s !== '').map(percentDecode);
        const name = parts[0]?.toString('utf8');
        if (!name) throw new RequestError(400, 'ERR no command in the path');
        const cmd: Command = named(name, parts.slice(1));
        if (method === 'POST' && body.length > 0) cmd.args.push(body);
        const [outcome] = await this.#execute([cmd], token, policy, upstream, deadline);
        if (!outcome) throw new Error('no outcome');
        await (outcome.ok ? send(200, resultEntry(outcome.value, base64)) : send(400, errorEntry(errorText(outcome.error))));
      }
    } catch (err) {
      if (err instanceof RequestError) {
        await send(err.status, errorEntry(err.message));
      } else if (err instanceof DeadlineError) {
        await send(504, errorEntry(`ERR gateway deadline of ${this.config.timeoutMs} ms passed before Redis answered`));
      } else if (err instanceof UnavailableError) {
        this.#log(`request failed: Redis unavailable (${describe(err.cause)})`);
        await send(503, errorEntry('ERR Redis is unavailable: the gateway cannot reach it right now; try again'));
      } else {
        this.#log(`request failed: internal error (${describe(err)})`);
        await send(500, errorEntry('ERR internal gateway error'));
      }
    } finally {
      if (!this.#streams.has(res)) this.metrics.request(route, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9);
      if (this.config.logRequests) this.#log(`${req.method} ${route} ${res.statusCode}`);
    }
  }

  async #execute(cmds: Command[], token: TokenPolicy, policy: { allowAdminCommands: boolean; timeoutMs: number }, upstream: Upstream, deadline: number): Promise<Outcome[]> {
    const { dedicated } = checkCommands(cmds, token, policy);
    if (dedicated && upstream.dedicatedCount >= this.config.maxDedicatedConnections) {
      throw new RequestError(503, `ERR too many blocking commands at once (GATEWAY_MAX_CONNECTIONS=${this.config.maxDedicatedConnections})`);
    }
    const mappers = cmds.map((c) => this.scripts.prepare(c));
    for (const c of cmds) this.metrics.command(metricName(c));
    const outcomes = await withDeadline(upstream.run(cmds, dedicated), deadline);
    return outcomes.map((o, i) => {
      const map = mappers[i];
      return map && o.ok ? { ok: true, value: map(o.value) } : o;
    });
  }

  /** Reads the whole body, refusing more than the limit with 413 (after draining what was sent). */
  async #readBody(req: IncomingMessage): Promise<Buffer> {
    const max = this.config.maxBodyBytes;
    const declared = Number(req.headers['content-length'] ?? NaN);
    const chunks: Buffer[] = [];
    let size = 0;
    let over = Number.isFinite(declared) && declared > max;
    for await (const chunk of req) {
      const buf = chunk as Buffer;
      size += buf.length;
      if (size > max) over = true;
      if (!over) chunks.push(buf);
      else if (size > max * 4 + 1024 * 1024) {
        req.destroy();
        break;
      }
    }
    if (over) throw new RequestError(413, `ERR the request body is over the ${max} byte limit (GATEWAY_MAX_BODY_BYTES)`);
    return Buffer.concat(chunks, size);
  }

  /** Ends open SSE streams so a graceful close does not wait on them. */
  endStreams(): void {
    for (const res of this.#streams) res.end();
  }

  async close(): Promise<void> {
    await Promise.all([...this.upstreams.values()].map((u) => u.close()));
  }
}

function formatUrl(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** Starts the gateway; resolves once it listens. Port 0 picks a free port. */
export async function startGateway(config: GatewayConfig, options: GatewayOptions = {}): Promise<RunningGateway> {
  const log = options.log ?? ((line: string) => process.stderr.write(`[gateway] ${line}\n`));
  const gateway = new Gateway(config, log);
  await Promise.all([...gateway.upstreams.values()].map((u) => u.ready(2_000)));
  const server: Server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    void gateway.handle(req, res);
  });
  server.requestTimeout = config.timeoutMs + 5_000;
  server.headersTimeout = Math.min(60_000, config.timeoutMs + 5_000);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: config.host, port: config.port, ipv6Only: false }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const displayHost = config.host === '0.0.0.0' ? '127.0.0.1' : config.host === '::' ? '::1' : config.host;
  let closing: Promise<void> | undefined;
  return {
    url: `${formatUrl(displayHost, port)}${config.basePath}`,
    host: config.host,
    port,
    close() {
      closing ??= (async () => {
        gateway.closing = true;
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        gateway.endStreams();
        server.closeIdleConnections();
        // In-flight requests finish (their answers close the socket); idle ones are closed as they
        // become idle; whatever is still open after the deadline (capped at 10 s) is cut.
        const sweep = setInterval(() => server.closeIdleConnections(), 50);
        const timer = setTimeout(() => server.closeAllConnections(), Math.min(config.timeoutMs, 10_000));
        await closed;
        clearInterval(sweep);
        clearTimeout(timer);
        await gateway.close();
      })();
      return closing;
    },
  };
}
