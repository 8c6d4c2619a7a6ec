/**
 * The workerd side of the fault lab (./fault-lab.ts): a test file asks for a Redis of its own and
 * breaks it for real (FLUSHALL, a restart with nothing on disk, DEL, random deletions once or
 * repeatedly, maxmemory with an eviction policy). Never the shared test Redis: parallel files use it.
 *
 * @example
 * const lab = await privateRedis();
 * const shop = { ...env, ...lab.bindings, REDIS_KEY_APP: 'f1' };
 * await lab.restart(); // Redis comes back empty; D1 keeps everything
 * afterAll(() => lab.stop());
 */
import { env } from 'cloudflare:workers';
import { Redis } from '@upstash/redis/cloudflare';
import { inject } from 'vitest';

export interface PrivateRedis {
  /** The private gateway's bindings, to spread into a test env. */
  bindings: { UPSTASH_REDIS_REST_URL: string; UPSTASH_REDIS_REST_TOKEN: string };
  /** A plain client (no batching) on the private gateway, for assertions and setup. */
  client: Redis;
  flushall(): Promise<void>;
  /** Kills redis-server and starts it empty on the same port; resolves once the gateway reaches it again. */
  restart(): Promise<void>;
  del(...keys: string[]): Promise<number>;
  /** Deletes each key matching `match` (default every key) with probability `share`, once. */
  drop(share: number, match?: string): Promise<{ scanned: number; deleted: number }>;
  /** Runs {@link drop} every `everyMs` until the returned function is called. */
  chaos(share: number, everyMs: number, match?: string): Promise<() => Promise<{ rounds: number; deleted: number }>>;
  /** CONFIG SET maxmemory / maxmemory-policy; `bytes: 0` lifts the cap. */
  maxmemory(bytes: number, policy?: string): Promise<void>;
  /** Every key matching `match` now (SCAN through the private gateway). */
  keys(match?: string): Promise<string[]>;
  stop(): Promise<void>;
}

async function lab<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${inject('faultLabUrl')}${path}`, {
    method,
    headers: { authorization: `Bearer ${inject('faultLabToken')}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`fault lab ${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

/** Starts a private redis-server + gateway pair for this test file. */
export async function privateRedis(): Promise<PrivateRedis> {
  const { id, url, token } = await lab<{ id: string; url: string; token: string }>('POST', '/redis');
  const client = new Redis({ url, token, enableAutoPipelining: false });
  const at = `/redis/${id}`;
  return {
    bindings: { UPSTASH_REDIS_REST_URL: url, UPSTASH_REDIS_REST_TOKEN: token },
    client,
    async flushall() {
      await lab('POST', `${at}/flushall`);
    },
    async restart() {
      await lab('POST', `${at}/restart`);
    },
    async del(...keys) {
      return (await lab<{ deleted: number }>('POST', `${at}/del`, { keys })).deleted;
    },
    drop: (share, match) => lab('POST', `${at}/drop`, { share, ...(match === undefined ? {} : { match }) }),
    async chaos(share, everyMs, match) {
      await lab('POST', `${at}/chaos`, { share, everyMs, ...(match === undefined ? {} : { match }) });
      return () => lab('DELETE', `${at}/chaos`);
    },
    async maxmemory(bytes, policy = 'allkeys-random') {
      await lab('POST', `${at}/maxmemory`, { bytes, policy });
    },
    async keys(match = '*') {
      const out: string[] = [];
      let cursor = '0';
      do {
        const [next, page] = await client.scan(cursor, { match, count: 1000 });
        cursor = String(next);
        out.push(...page);
      } while (cursor !== '0');
      return out.sort();
    },
    async stop() {
      await lab('DELETE', at);
    },
  };
}

/** An env of the app on the private Redis, with a key prefix of its own. */
export function envOn(redis: PrivateRedis, overrides: Partial<Env> = {}): Env {
  return { ...env, ...redis.bindings, REDIS_KEY_APP: `f${crypto.randomUUID().slice(0, 8)}`, ...overrides };
}

/**
 * Runs `fn` while every request whose body `carries` (a command name, a script's SHA) fails on the
 * wire, as a network fault on exactly that round trip would: the commands in it may not have run.
 * @example await failingRequests((body) => body.includes('"zincrby"'), () => checkout(shop, sid, key, ip));
 */
export async function failingRequests<T>(carries: (body: string) => boolean, fn: () => Promise<T>): Promise<T> {
  const original = globalThis.fetch;
  globalThis.fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
    if (typeof init?.body === 'string' && carries(init.body)) throw new TypeError('Network connection lost.');
    return original(input, init);
  }) as typeof fetch;
  try {
    return await fn();
  } finally {
    globalThis.fetch = original;
  }
}
