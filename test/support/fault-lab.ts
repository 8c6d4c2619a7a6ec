/**
 * The fault lab: a loopback control server, started by test/global-setup.ts in Node, through which
 * workerd test files (which cannot spawn processes) get a Redis of their own to break for real.
 *
 * `POST /redis` starts a PRIVATE redis-server (no persistence) and a gateway in front of it with
 * admin commands allowed, and answers its URL and token. On that pair, and on no other Redis, the
 * lab then flushes, restarts the process empty, deletes keys (named, or a random share, once or
 * repeatedly while a test runs) and sets `maxmemory` with an eviction policy. The shared test Redis
 * and the Redis on 6379 are never touched: every route takes the id of a pair this lab started.
 *
 * Every request needs `Authorization: Bearer <token>` (the token is random per run and provided to
 * the tests like the gateway's). Bodies and answers are JSON; errors are `{ "error": "…" }`.
 *
 * Routes (`:id` is what `POST /redis` answered):
 * - `POST /redis` → `{ id, url, token }`
 * - `POST /redis/:id/flushall` · `POST /redis/:id/restart` (kill, start empty on the same port, wait
 *   until the gateway answers again) → `{ ok: true }`
 * - `POST /redis/:id/del { keys }` → `{ deleted }`
 * - `POST /redis/:id/drop { share, match? }` (each key matching `match`, default `*`, deleted with
 *   probability `share`) → `{ scanned, deleted }`
 * - `POST /redis/:id/chaos { share, everyMs, match? }` starts a drop every `everyMs`;
 *   `DELETE /redis/:id/chaos` stops it → `{ rounds, deleted }`
 * - `POST /redis/:id/maxmemory { bytes, policy }` (CONFIG SET; `bytes: 0` lifts the cap)
 * - `DELETE /redis/:id` stops the pair. Whatever is left is stopped with the lab.
 */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { loadConfig } from '../../gateway/config.ts';
import { startGateway, type RunningGateway } from '../../gateway/server.ts';
import { startRedisServer, type RedisProcess } from './redis-process.ts';

export interface FaultLab {
  /** `http://127.0.0.1:<port>` */
  url: string;
  token: string;
  close(): Promise<void>;
}

interface Pair {
  redis: RedisProcess;
  gateway: RunningGateway;
  token: string;
  admin: Redis;
  chaos?: { timer: ReturnType<typeof setInterval> | undefined; rounds: number; deleted: number; running: Promise<void> } | undefined;
}

class LabError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const POLICIES = new Set(['noeviction', 'allkeys-lru', 'allkeys-lfu', 'allkeys-random', 'volatile-lru', 'volatile-lfu', 'volatile-random', 'volatile-ttl']);

const sameToken = (given: string, expected: string) =>
  timingSafeEqual(createHash('sha256').update(given).digest(), createHash('sha256').update(expected).digest());

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 1_000_000) throw new LabError(413, 'body too large');
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  const doc: unknown = JSON.parse(text);
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new LabError(400, 'the body must be a JSON object');
  return doc as Record<string, unknown>;
}

function share(body: Record<string, unknown>): number {
  const s = body['share'];
  if (typeof s !== 'number' || !(s > 0 && s <= 1)) throw new LabError(400, 'share must be a number in (0, 1]');
  return s;
}

function match(body: Record<string, unknown>): string {
  const m = body['match'] ?? '*';
  if (typeof m !== 'string' || m === '') throw new LabError(400, 'match must be a non-empty glob');
  return m;
}

/** Deletes each key matching `pattern` with probability `p`; one SCAN pass. */
async function drop(admin: Redis, p: number, pattern: string): Promise<{ scanned: number; deleted: number }> {
  let cursor = '0';
  let scanned = 0;
  let deleted = 0;
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
    cursor = next;
    scanned += keys.length;
    const doomed = keys.filter(() => Math.random() < p);
    if (doomed.length > 0) deleted += await admin.unlink(...doomed);
  } while (cursor !== '0');
  return { scanned, deleted };
}

/** Polls the gateway until a command goes through (after a restart its connection comes back by itself). */
async function waitForGateway(pair: Pair): Promise<void> {
  const deadline = Date.now() + 15_000;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(pair.gateway.url, { method: 'POST', headers: { authorization: `Bearer ${pair.token}` }, body: '["PING"]', signal: AbortSignal.timeout(2_000) });
      const text = await res.text();
      if (res.ok && text.includes('PONG')) return;
      last = `${res.status} ${text.slice(0, 100)}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await sleep(50);
  }
  throw new LabError(500, `the gateway did not reach the restarted Redis within 15 s (last: ${last})`);
}

async function stopChaos(pair: Pair): Promise<{ rounds: number; deleted: number }> {
  const c = pair.chaos;
  if (!c) return { rounds: 0, deleted: 0 };
  pair.chaos = undefined;
  clearInterval(c.timer);
  await c.running;
  return { rounds: c.rounds, deleted: c.deleted };
}

async function stopPair(pair: Pair): Promise<void> {
  await stopChaos(pair);
  pair.admin.disconnect();
  await pair.gateway.close();
  await pair.redis.stop();
}

/**
 * Starts the lab on a free loopback port.
 * @example const lab = await startFaultLab(); project.provide('faultLabUrl', lab.url);
 */
export async function startFaultLab(options: { log?: (line: string) => void } = {}): Promise<FaultLab> {
  const log = options.log ?? ((line: string) => process.stderr.write(`[fault-lab] ${line}\n`));
  const token = randomBytes(24).toString('base64url');
  const pairs = new Map<string, Pair>();

  function pairOf(id: string | undefined): Pair {
    const pair = id === undefined ? undefined : pairs.get(id);
    if (!pair) throw new LabError(404, `no private Redis "${id ?? ''}" (ids come from POST /redis)`);
    return pair;
  }

  async function create(): Promise<Record<string, unknown>> {
    const redis = await startRedisServer();
    const pairToken = randomBytes(24).toString('base64url');
    let gateway: RunningGateway;
    try {
      gateway = await startGateway(loadConfig({ REDIS_URL: redis.url, GATEWAY_PORT: '0', GATEWAY_TOKEN: pairToken, GATEWAY_ALLOW_ADMIN_COMMANDS: 'true', GATEWAY_TIMEOUT_MS: '10000' }), {
        // Restarts are the point here, so the gateway's "down"/"up" lines are noise unless asked for.
        log: (line) => (process.env['FAULT_LAB_VERBOSE'] ? log(`gateway ${redis.port}: ${line}`) : undefined),
      });
    } catch (err) {
      await redis.stop();
      throw err;
    }
    // A command sent while the process restarts waits for the reconnection instead of failing.
    const admin = new Redis(redis.port, '127.0.0.1', { lazyConnect: true, enableOfflineQueue: true, maxRetriesPerRequest: 20 });
    admin.on('error', () => undefined); // reconnects by itself after a restart
    const id = randomBytes(8).toString('hex');
    pairs.set(id, { redis, gateway, token: pairToken, admin });
    return { id, url: gateway.url, token: pairToken };
  }

  async function handle(method: string, parts: string[], body: Record<string, unknown>): Promise<unknown> {
    if (parts[0] !== 'redis') throw new LabError(404, 'unknown route');
    if (parts.length === 1 && method === 'POST') return create();
    const id = parts[1];
    const pair = pairOf(id);
    const action = parts[2];
    if (action === undefined && method === 'DELETE') {
      pairs.delete(id!);
      await stopPair(pair);
      return { ok: true };
    }
    if (action === 'chaos' && method === 'DELETE') return stopChaos(pair);
    if (method !== 'POST') throw new LabError(405, 'method not allowed');
    switch (action) {
      case 'flushall':
        await pair.admin.flushall();
        return { ok: true };
      case 'restart':
        await stopChaos(pair);
        await pair.redis.restart();
        await waitForGateway(pair);
        return { ok: true };
      case 'del': {
        const keys = body['keys'];
        if (!Array.isArray(keys) || keys.length === 0 || !keys.every((k) => typeof k === 'string')) throw new LabError(400, 'keys must be a non-empty list of strings');
        return { deleted: await pair.admin.unlink(...(keys as string[])) };
      }
      case 'drop':
        return drop(pair.admin, share(body), match(body));
      case 'chaos': {
        const p = share(body);
        const pattern = match(body);
        const every = body['everyMs'];
        if (typeof every !== 'number' || !Number.isInteger(every) || every < 1) throw new LabError(400, 'everyMs must be a whole number ≥ 1');
        await stopChaos(pair);
        const chaos: NonNullable<Pair['chaos']> = { rounds: 0, deleted: 0, running: Promise.resolve(), timer: undefined };
        let busy = false;
        chaos.timer = setInterval(() => {
          if (busy) return;
          busy = true;
          chaos.running = drop(pair.admin, p, pattern)
            .then((r) => {
              chaos.rounds++;
              chaos.deleted += r.deleted;
            })
            .catch(() => undefined) // a round that met a restarting Redis just counts nothing
            .finally(() => {
              busy = false;
            });
        }, every);
        pair.chaos = chaos;
        return { ok: true };
      }
      case 'maxmemory': {
        const bytes = body['bytes'];
        const policy = body['policy'] ?? 'allkeys-random';
        if (typeof bytes !== 'number' || !Number.isInteger(bytes) || bytes < 0) throw new LabError(400, 'bytes must be a whole number ≥ 0');
        if (typeof policy !== 'string' || !POLICIES.has(policy)) throw new LabError(400, `policy must be one of ${[...POLICIES].join(', ')}`);
        await pair.admin.config('SET', 'maxmemory-policy', policy);
        await pair.admin.config('SET', 'maxmemory', String(bytes));
        return { ok: true };
      }
      default:
        throw new LabError(404, 'unknown route');
    }
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const reply = (status: number, doc: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(doc));
    };
    const given = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (given === undefined || !sameToken(given, token)) return reply(401, { error: 'bad or missing token' });
    const parts = new URL(req.url ?? '/', 'http://lab').pathname.split('/').filter(Boolean);
    readJson(req)
      .then((body) => handle(req.method ?? 'GET', parts, body))
      .then(
        (doc) => reply(200, doc),
        (err: unknown) => {
          const status = err instanceof LabError ? err.status : err instanceof SyntaxError ? 400 : 500;
          if (status === 500) log(`${req.method} ${req.url}: ${err instanceof Error ? err.message : String(err)}`);
          reply(status, { error: err instanceof Error ? err.message : String(err) });
        },
      );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      const left = [...pairs.values()];
      pairs.clear();
      await Promise.allSettled(left.map(stopPair));
    },
  };
}
