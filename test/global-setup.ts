/**
 * Runs once per test run, in Node, before any project: starts a private redis-server (or uses
 * REDIS_URL) and Redis REST gateways in-process in front of it, and `provide()`s their addresses
 * (see ./provided.d.ts). The workers project turns them into Miniflare bindings in vitest.config.ts.
 * It also starts the fault lab (./support/fault-lab.ts), where a test file gets a private Redis +
 * gateway pair to flush, restart empty or evict from.
 * Everything listens on 127.0.0.1 on ports the OS picks; the shared Redis on 6379 is never touched.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import type { TestProject } from 'vitest/node';
import { loadConfig } from '../gateway/config.ts';
import { startGateway, type RunningGateway } from '../gateway/server.ts';
import { startFaultLab } from './support/fault-lab.ts';
import { assertRedisServerOnPath, freePort, startRedisServer } from './support/redis-process.ts';

/** The slow gateway's added latency: well above one Redis call, well below test timeouts. */
const SLOW_GATEWAY_LATENCY_MS = 400;

function gatewayLog(name: string): (line: string) => void {
  return (line) => process.stderr.write(`[gateway:${name}] ${line}\n`);
}

function start(name: string, redisUrl: string, token: string, extra: Record<string, string> = {}): Promise<RunningGateway> {
  const config = loadConfig({
    REDIS_URL: redisUrl,
    GATEWAY_PORT: '0',
    GATEWAY_TOKEN: token,
    // Tests use admin commands such as SCRIPT FLUSH and CONFIG GET (never FLUSHALL).
    GATEWAY_ALLOW_ADMIN_COMMANDS: 'true',
    ...extra,
  });
  return startGateway(config, { log: gatewayLog(name) });
}

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cleanups: (() => Promise<void>)[] = [];
  const teardown = async () => {
    const errors: unknown[] = [];
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'global teardown failed');
  };

  try {
    let redisUrl = process.env['REDIS_URL'];
    if (redisUrl === undefined || redisUrl === '') {
      const redis = await startRedisServer(); // throws at once when redis-server is missing
      cleanups.push(redis.stop);
      redisUrl = redis.url;
    }

    // A Redis that has gone away: started and then stopped when redis-server is available, else a
    // port where nothing listens (the gateway then waits up to 2 s for it before listening).
    let downRedisUrl: string;
    let stopDownRedis: (() => Promise<void>) | undefined;
    try {
      assertRedisServerOnPath();
      const downRedis = await startRedisServer();
      downRedisUrl = downRedis.url;
      stopDownRedis = downRedis.stop;
      cleanups.push(downRedis.stop);
    } catch {
      downRedisUrl = `redis://127.0.0.1:${await freePort()}`;
    }

    const token = randomBytes(24).toString('base64url');
    const [gateway, slow, down] = await Promise.all([
      start('shared', redisUrl, token),
      start('slow', redisUrl, token, { GATEWAY_LATENCY_MS: String(SLOW_GATEWAY_LATENCY_MS) }),
      start('down', downRedisUrl, token),
    ]);
    cleanups.push(gateway.close, slow.close, down.close);
    await stopDownRedis?.();

    project.provide('redisUrl', redisUrl);
    project.provide('gatewayUrl', gateway.url);
    project.provide('gatewayToken', token);
    project.provide('slowGatewayUrl', slow.url);
    project.provide('downGatewayUrl', down.url);
    // Every connection reset at once: a network error on every request, like a port where nothing
    // listens, but on a port held for the whole run (a probed free port could be taken meanwhile by
    // a gateway or redis-server that a test starts, the fault lab's above all).
    const refuser = createServer((socket) => socket.resetAndDestroy());
    await new Promise<void>((resolve, reject) => {
      refuser.once('error', reject);
      refuser.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
    });
    cleanups.push(() => new Promise<void>((resolve) => refuser.close(() => resolve())));
    project.provide('closedUrl', `http://127.0.0.1:${(refuser.address() as AddressInfo).port}`);

    const lab = await startFaultLab();
    cleanups.push(lab.close);
    project.provide('faultLabUrl', lab.url);
    project.provide('faultLabToken', lab.token);

    // wrangler.toml lists both as required secrets, and the plugin's wrangler warns when it cannot
    // find them in .dev.vars or process.env. The Worker gets them from the injected bindings
    // (vitest.config.ts), which win over both; these copies only answer that check, with the
    // same values, and are put back afterwards.
    const saved = { url: process.env['UPSTASH_REDIS_REST_URL'], token: process.env['UPSTASH_REDIS_REST_TOKEN'] };
    process.env['UPSTASH_REDIS_REST_URL'] = gateway.url;
    process.env['UPSTASH_REDIS_REST_TOKEN'] = token;
    cleanups.push(async () => {
      restoreEnv('UPSTASH_REDIS_REST_URL', saved.url);
      restoreEnv('UPSTASH_REDIS_REST_TOKEN', saved.token);
    });
  } catch (err) {
    await teardown().catch(() => undefined);
    throw err;
  }
  return teardown;
}
