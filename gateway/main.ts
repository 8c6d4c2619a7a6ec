/**
 * `npm run gateway`: starts the Redis REST gateway from the environment, prints where it listens and
 * which Redis it talks to, and shuts down gracefully on SIGTERM / SIGINT. A misconfiguration prints
 * one line and exits 2; nothing here prints a stack trace or a token. With GATEWAY_WORKERS > 1 this
 * process becomes the primary of that many gateway processes on the same port (workers.ts).
 */
import { ConfigError, loadConfig, redactUrl } from './config.ts';
import { createLogger, errorFields } from './log.ts';
import { renderSnapshots } from './metrics.ts';
import { startGateway } from './server.ts';
import { announceListening, isWorker, runPrimary, workerMetrics } from './workers.ts';

function fail(message: string, code: number): never {
  process.stderr.write(`gateway: ${message}\n`);
  process.exit(code);
}

let config;
try {
  config = loadConfig(process.env);
} catch (err) {
  if (err instanceof ConfigError) fail(err.message, 2);
  throw err;
}

const clustered = config.workers > 1;
// JSON lines on stdout from here on (log.ts); a misconfiguration above is one plain line on stderr.
const log = createLogger(config.logLevel);
const upstreams = [...new Set([config.redisUrl, ...config.tokens.map((t) => t.redisUrl)])].map(redactUrl);
const details = [
  `${config.tokens.length} token${config.tokens.length === 1 ? '' : 's'}; Redis ${upstreams.join(', ')}`,
  ...(config.allowAdminCommands ? ['admin commands ALLOWED (GATEWAY_ALLOW_ADMIN_COMMANDS=true)'] : []),
  ...(config.latencyMs > 0 ? [`adding ${config.latencyMs} ms to every answer (GATEWAY_LATENCY_MS)`] : []),
];
/** What an operator checks first; never tokens or secrets, Redis URLs with their password masked. */
const summary = {
  host: config.host, port: config.port, basePath: config.basePath, redis: upstreams, tokens: config.tokens.length,
  workers: config.workers, logLevel: config.logLevel, logRequests: config.logRequests, timeoutMs: config.timeoutMs,
  maxBodyBytes: config.maxBodyBytes, maxPipelineCommands: config.maxPipelineCommands, maxConnections: config.maxDedicatedConnections,
  maxSockets: config.maxSockets, allowAdminCommands: config.allowAdminCommands, latencyMs: config.latencyMs,
};
if (!isWorker()) log.info({ config: summary }, 'starting');
if (clustered && !isWorker()) {
  runPrimary({
    workers: config.workers,
    details,
    say: (line) => log.info(line),
    merge: renderSnapshots,
  });
} else try {
  let snapshot: (() => unknown) | undefined;
  const metrics = clustered ? workerMetrics(async () => snapshot?.()) : undefined;
  const gateway = await startGateway(config, metrics ? { metrics, logger: log } : { logger: log });
  snapshot = () => gateway.metricsSnapshot();
  if (clustered) announceListening(gateway.url);
  if (!clustered) {
    log.info({ url: gateway.url }, `listening on ${gateway.url}`);
    for (const d of details) log.info(d);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    if (!clustered) log.info({ signal }, `${signal} received, finishing in-flight requests`);
    gateway.close().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err: errorFields(err) }, 'could not close cleanly');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
} catch (err) {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
  if (code === 'EADDRINUSE') fail(`port ${config.port} on ${config.host} is already in use (set GATEWAY_PORT)`, 1);
  if (code === 'EADDRNOTAVAIL') fail(`cannot listen on ${config.host} (set GATEWAY_HOST)`, 1);
  if (code === 'EACCES') fail(`not allowed to listen on port ${config.port} (set GATEWAY_PORT)`, 1);
  log.fatal({ err: errorFields(err) }, 'could not start');
  process.exit(1);
}
