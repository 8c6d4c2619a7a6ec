/**
 * `npm run gateway`: starts the Redis REST gateway from the environment, prints where it listens and
 * which Redis it talks to, and shuts down gracefully on SIGTERM / SIGINT. A misconfiguration prints
 * one line and exits 2; nothing here prints a stack trace or a token.
 */
import { ConfigError, loadConfig, redactUrl } from './config.ts';
import { startGateway } from './server.ts';

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

try {
  const gateway = await startGateway(config);
  const upstreams = [...new Set([config.redisUrl, ...config.tokens.map((t) => t.redisUrl)])].map(redactUrl);
  process.stdout.write(
    `gateway: listening on ${gateway.url} (${config.tokens.length} token${config.tokens.length === 1 ? '' : 's'})\n` +
      `gateway: Redis ${upstreams.join(', ')}\n` +
      (config.allowAdminCommands ? 'gateway: admin commands ALLOWED (GATEWAY_ALLOW_ADMIN_COMMANDS=true)\n' : '') +
      (config.latencyMs > 0 ? `gateway: adding ${config.latencyMs} ms to every answer (GATEWAY_LATENCY_MS)\n` : ''),
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`gateway: ${signal} received, finishing in-flight requests\n`);
    gateway.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
} catch (err) {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
  if (code === 'EADDRINUSE') fail(`port ${config.port} on ${config.host} is already in use (set GATEWAY_PORT)`, 1);
  if (code === 'EADDRNOTAVAIL') fail(`cannot listen on ${config.host} (set GATEWAY_HOST)`, 1);
  if (code === 'EACCES') fail(`not allowed to listen on port ${config.port} (set GATEWAY_PORT)`, 1);
  fail(`could not start: ${err instanceof Error ? err.message : String(err)}`, 1);
}
