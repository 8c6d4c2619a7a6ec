/**
 * The one way the app builds its Redis client: `@upstash/redis` over HTTP, with a time budget per
 * request and a retry policy chosen for Workers instead of the client's defaults.
 *
 * Retry policy: 2 retries, 50 ms then 100 ms apart.
 * - The client retries only when `fetch` itself throws (DNS, refused or reset connection). An HTTP
 *   error answer (Redis error, 401, 503 from the gateway) is never retried, so this is about the
 *   network alone.
 * - Its default (5 retries, `50·e^n` ms: about 4.3 s of sleeping) outlasts any sensible request
 *   budget and spends up to 6 subrequests per call. Two quick retries absorb the usual transient
 *   failure (a reused keep-alive connection the far side has closed) and still declare a real outage
 *   within ~150 ms plus three connection attempts.
 * - The timeout signal is created once per HTTP request, before the client's retry loop, so one
 *   budget covers every attempt: the worst case is `timeoutMs` plus the backoff sleep in progress
 *   (at most 100 ms; the client's sleep does not watch the signal).
 * - A connection lost after Redis ran a command means a retry runs it again. Work that must not run
 *   twice belongs in one Lua script guarded by an idempotency key, not in a bigger retry count.
 *
 * @example
 * const redis = createRedis(c.env);
 * const [views] = await Promise.all([redis.incr(keys.key('views', id)), redis.get(keys.key('cache', id))]);
 */
import { errors, Redis, type Requester, type UpstashRequest, type UpstashResponse } from '@upstash/redis/cloudflare';
import { RedisConfigError } from './errors.ts';

export { RedisConfigError };

/** The client every pattern receives. Patterns should accept a {@link RedisCommands} pick of it. */
export type RedisClient = Redis;

/**
 * A narrow structural view of the client: a pattern declares the commands it uses, so tests can
 * hand it a real client with one method overridden and readers see its footprint at a glance.
 *
 * @example
 * function counter(redis: RedisCommands<'incr' | 'pexpire'>) { … }
 */
export type RedisCommands<K extends keyof Redis> = Pick<Redis, K>;

/** The part of `Env` this module reads. Values may be missing at run time whatever the types say. */
export interface RedisEnv {
  UPSTASH_REDIS_REST_URL?: string | undefined;
  UPSTASH_REDIS_REST_TOKEN?: string | undefined;
  /** Time budget of one HTTP request to Redis, retries included, in ms. @default "3000" */
  REDIS_TIMEOUT_MS?: string | undefined;
}

export interface CreateRedisOptions {
  /** Overrides `REDIS_TIMEOUT_MS` (e.g. a tighter budget for a fail-open rate limit). */
  timeoutMs?: number;
  /** Retries of network errors. @default 2 */
  retries?: number;
  /**
   * How commands are grouped into HTTP requests.
   * - `'tick'`: the client's own auto-pipelining: commands issued within two microtasks of each
   *   other, reads and writes in separate requests.
   * - `'task'`: every command issued during the current task (the whole synchronous run plus its
   *   microtasks, across middlewares and handlers) goes out in ONE `/pipeline` request, reads and
   *   writes together. This is what keeps a request's critical path to one round trip when a rate
   *   limit, a session load and a cache read start independently.
   * @default 'tick'
   */
  batch?: 'tick' | 'task';
  /**
   * Called once per HTTP request to Redis when it ends (answered or failed), with its command
   * count and duration: the hook for per-request accounting (round trips, commands, Redis time).
   * Clients are cached per env and settings, so pass the same function every time (a module-level
   * one that finds the current request itself, e.g. through AsyncLocalStorage).
   */
  observe?: RedisObserver;
}

/** One HTTP request to Redis, as {@link CreateRedisOptions.observe} sees it. */
export interface RedisTrip {
  /** Commands it carried: 1, or the size of a pipeline / transaction. */
  commands: number;
  /** From the request's start to its answer or failure, retries included, in ms. */
  ms: number;
  /** false when it threw (network, timeout) or Redis answered an HTTP error. */
  ok: boolean;
}
export type RedisObserver = (trip: RedisTrip) => void;

/** Budget of one HTTP request when `REDIS_TIMEOUT_MS` is unset, in ms. */
export const DEFAULT_REDIS_TIMEOUT_MS = 3_000;
/** Retries of a network error per HTTP request (so 3 attempts in all). */
export const DEFAULT_REDIS_RETRIES = 2;

/** 50 ms, 100 ms, 200 ms, … */
const backoff = (retryCount: number): number => 50 * 2 ** retryCount;

// One client per env object and settings: an isolate serves many requests with the same `env`, so
// they share one client (and its auto-pipeline); a test's own env gets its own.
const clients = new WeakMap<RedisEnv, Map<string, Redis>>();

function parseTimeout(raw: string | undefined): number {
  if (raw === undefined || raw === '') return DEFAULT_REDIS_TIMEOUT_MS;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms < 50 || ms > 60_000) {
    throw new RedisConfigError('REDIS_TIMEOUT_MS must be an integer number of milliseconds between 50 and 60000');
  }
  return ms;
}

function checkUrl(raw: string | undefined): string {
  if (raw === undefined || raw.trim() === '') {
    throw new RedisConfigError('UPSTASH_REDIS_REST_URL is not set: `wrangler secret put UPSTASH_REDIS_REST_URL`, or .dev.vars locally');
  }
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch (cause) {
    throw new RedisConfigError('UPSTASH_REDIS_REST_URL is not a URL', { cause });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new RedisConfigError('UPSTASH_REDIS_REST_URL must be an http(s) URL');
  }
  return raw.trim();
}

function checkToken(raw: string | undefined): string {
  if (raw === undefined || raw.trim() === '') {
    throw new RedisConfigError('UPSTASH_REDIS_REST_TOKEN is not set: `wrangler secret put UPSTASH_REDIS_REST_TOKEN`, or .dev.vars locally');
  }
  return raw.trim();
}

/**
 * The Redis client for `env`, built on first use and then reused for the same `env` object.
 * Does no I/O: the first command opens the connection. Throws {@link RedisConfigError} when the URL,
 * token or timeout is missing or malformed.
 *
 * @param env the Worker's bindings (`c.env`)
 * @param options overrides of the timeout and retry count; each distinct setting gets its own client
 * @example
 * app.get('/healthz', async (c) => c.json({ pong: await createRedis(c.env).ping() }));
 */
export function createRedis(env: RedisEnv, options: CreateRedisOptions = {}): RedisClient {
  const timeoutMs = options.timeoutMs ?? parseTimeout(env.REDIS_TIMEOUT_MS);
  const retries = options.retries ?? DEFAULT_REDIS_RETRIES;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new RedisConfigError('timeoutMs must be a positive integer');
  if (!Number.isInteger(retries) || retries < 0) throw new RedisConfigError('retries must be a non-negative integer');

  const batch = options.batch ?? 'tick';
  const id = `${timeoutMs}/${retries}/${batch}/${options.observe ? observerId(options.observe) : '-'}`;
  let perEnv = clients.get(env);
  const cached = perEnv?.get(id);
  if (cached) return cached;

  const url = checkUrl(env.UPSTASH_REDIS_REST_URL);
  const token = checkToken(env.UPSTASH_REDIS_REST_TOKEN);
  let redis: Redis;
  try {
    const config = {
      url,
      token,
      // A factory, not a signal: the client calls it once per HTTP request, so each request gets a
      // fresh budget. A fixed signal would expire once and, worse, makes the client answer an
      // aborted request with the result "Aborted" instead of throwing.
      signal: () => AbortSignal.timeout(timeoutMs),
      retry: { retries, backoff },
      enableAutoPipelining: batch === 'tick',
    };
    redis = options.observe ? new ObservedRedis(config, options.observe) : new Redis(config);
  } catch (cause) {
    // The client's own URL check is stricter than ours; its message quotes the URL.
    if (cause instanceof errors.UrlError) throw new RedisConfigError('UPSTASH_REDIS_REST_URL is not a valid REST URL', { cause });
    throw cause;
  }
  if (!perEnv) {
    perEnv = new Map();
    clients.set(env, perEnv);
  }
  if (batch === 'task') redis = batchPerTask(redis);
  perEnv.set(id, redis);
  return redis;
}

const observerIds = new WeakMap<RedisObserver, number>();
let nextObserverId = 1;
function observerId(fn: RedisObserver): number {
  let n = observerIds.get(fn);
  if (n === undefined) observerIds.set(fn, (n = nextObserverId++));
  return n;
}

/** Times each HTTP request of the wrapped requester and reports it; everything else passes through. */
class ObservingRequester implements Requester {
  private readonly inner: Requester;
  private readonly observe: RedisObserver;
  constructor(inner: Requester, observe: RedisObserver) {
    this.inner = inner;
    this.observe = observe;
  }
  // The client reads and writes these on its requester (read-your-writes sync).
  get readYourWrites(): boolean {
    return this.inner.readYourWrites ?? false;
  }
  set readYourWrites(v: boolean) {
    this.inner.readYourWrites = v;
  }
  get upstashSyncToken(): string {
    return this.inner.upstashSyncToken ?? '';
  }
  set upstashSyncToken(v: string) {
    this.inner.upstashSyncToken = v;
  }
  async request<TResult = unknown>(req: UpstashRequest): Promise<UpstashResponse<TResult>> {
    const started = performance.now();
    const body = req.body;
    const commands = Array.isArray(body) && Array.isArray(body[0]) ? body.length : 1;
    let ok = false;
    try {
      const res = await this.inner.request<TResult>(req);
      ok = res.error === undefined;
      return res;
    } finally {
      try {
        this.observe({ commands, ms: performance.now() - started, ok });
      } catch {
        // An observer's failure is not the command's.
      }
    }
  }
}

/**
 * A client whose HTTP requester reports every request to an observer. `client` is the requester
 * the base class sends through, a protected field, so this subclass wraps it without a cast. The
 * base constructor runs with auto-pipelining off (it would return a proxy over the unwrapped
 * client); it is turned on here, after the wrap, the way the base class does it.
 */
class ObservedRedis extends Redis {
  constructor(config: ConstructorParameters<typeof Redis>[0], observe: RedisObserver) {
    super({ ...config, enableAutoPipelining: false });
    this.client = new ObservingRequester(this.client, observe);
    if (config.enableAutoPipelining) {
      this.enableAutoPipelining = true;
      return this.autoPipeline();
    }
  }
}

/** Commands the Proxy must not route through a pipeline (they are not single commands). */
const DIRECT = new Set(['pipeline', 'multi', 'createScript', 'use', 'readYourWritesSyncToken', 'subscribe', 'psubscribe']);
const MAX_BATCH = 1000;

/**
 * Wraps a client (auto-pipelining off) so that every pipelinable command issued during the
 * current task joins one pipeline, sent by a `setTimeout(0)` once the task and its microtasks are
 * done. Each command still resolves or rejects on its own (`keepErrors`), exactly as if it had been
 * sent alone; a failed HTTP request rejects every command of its batch.
 */
function batchPerTask(redis: Redis): Redis {
  type Entry = { result?: unknown; error?: string | undefined };
  type Batch = { pipeline: ReturnType<Redis['pipeline']>; size: number; results: Promise<Entry[]> };
  let current: Batch | null = null;
  const probe = redis.pipeline() as unknown as Record<string, unknown>;
  const open = (): Batch => {
    const pipeline = redis.pipeline();
    const batch: Batch = {
      pipeline,
      size: 0,
      results: new Promise<void>((resolve) => setTimeout(resolve, 0)).then(() => {
        if (current === batch) current = null;
        return pipeline.exec({ keepErrors: true }) as Promise<Entry[]>;
      }),
    };
    return batch;
  };
  return new Proxy(redis, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof prop !== 'string' || typeof value !== 'function' || DIRECT.has(prop) || typeof probe[prop] !== 'function') return value;
      return (...args: unknown[]) => {
        current ??= open();
        const batch = current;
        const index = batch.size++;
        if (batch.size >= MAX_BATCH) current = null;
        (batch.pipeline as unknown as Record<string, (...a: unknown[]) => unknown>)[prop]?.(...args);
        return batch.results.then((results) => {
          const entry = results[index];
          if (!entry) throw new errors.UpstashError('Command failed: no reply in the pipeline');
          if (entry.error) throw new errors.UpstashError(`Command failed: ${entry.error}`);
          return entry.result;
        });
      };
    },
  });
}

/** Why a Redis call failed, in words safe to show a client or a log. */
export type RedisFailure = 'config' | 'timeout' | 'unreachable' | 'rejected' | 'unknown';

/**
 * Classifies an error thrown by {@link createRedis} or a command, without looking at its message
 * (an `UpstashError` message quotes the command, keys and values included).
 *
 * - `config`: {@link RedisConfigError}
 * - `timeout`: the time budget ran out
 * - `unreachable`: the network failed on every attempt (what `fetch` throws)
 * - `rejected`: the REST endpoint answered with an error (auth, Redis error, gateway 5xx)
 */
export function classifyRedisError(err: unknown): RedisFailure {
  if (err instanceof RedisConfigError) return 'config';
  if (err instanceof errors.UpstashError) return 'rejected';
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'timeout';
  // fetch signals a network failure with a TypeError (Node, browsers) or a plain Error (workerd:
  // "Network connection lost."); the client rethrows it after its last retry. Our own errors and
  // the client's are named subclasses, so they never land here.
  if (err instanceof TypeError || (err instanceof Error && err.name === 'Error')) return 'unreachable';
  return 'unknown';
}
