/**
 * GATEWAY_WORKERS: several gateway processes on one port (node:cluster; the primary hands out
 * connections, every worker is a whole gateway with its own Redis connections). What the workers
 * share lives in Redis (the script aliases, scripts.ts); what the primary adds is:
 * - start-up: one "listening" line once every worker listens;
 * - restarts: a worker that dies is replaced (after 1 s, so a crash loop does not spin);
 * - `/metrics`: the worker that gets the scrape asks the primary, which collects every worker's
 *   snapshot (up to 2 s; a worker that does not answer is left out) and merges them, so a scrape
 *   counts the whole gateway whichever worker answers it;
 * - shutdown: SIGTERM / SIGINT go to every worker, which finish their in-flight requests as a
 *   single gateway does; the primary exits when the last one has.
 * node:cluster rather than SO_REUSEPORT: Node's `reusePort` needs Linux ≥ 3.9 and leaves balancing
 * to the kernel per connection; cluster works everywhere Node does and gives the IPC channel the
 * metrics need. Hand-written because no maintained library does this for a plain node:http server
 * (pm2 and throng were weighed: a process manager to install, or a 40-line wrapper without metrics).
 */
import cluster, { type Worker } from 'node:cluster';

type Message =
  | { edgeRedis: 'listening'; url: string }
  | { edgeRedis: 'metrics?'; id: number }
  | { edgeRedis: 'metrics-collect'; id: number }
  | { edgeRedis: 'metrics-part'; id: number; part: unknown }
  | { edgeRedis: 'metrics!'; id: number; text: string };

function isMessage(m: unknown): m is Message {
  return typeof m === 'object' && m !== null && 'edgeRedis' in m && typeof m.edgeRedis === 'string';
}

export function isWorker(): boolean {
  return cluster.isWorker;
}

export interface PrimaryOptions {
  workers: number;
  say(line: string): void;
  /** Printed after the listening line (tokens, Redis, warnings), as a single gateway prints them. */
  details: string[];
  /** Merges the workers' metric snapshots into the Prometheus text a scrape gets. */
  merge(parts: unknown[]): Promise<string>;
}

/** Runs the primary: forks, relays metrics, restarts, and stops every worker on a signal. */
export function runPrimary(o: PrimaryOptions): void {
  let stopping = false;
  let announced = false;
  let failed = false;
  const listening = new Set<Worker>();
  const collections = new Map<number, { parts: unknown[]; waiting: Set<number>; done: () => void }>();
  let nextId = 0;

  const fork = (): void => {
    const worker = cluster.fork();
    worker.on('message', (m: unknown) => {
      if (!isMessage(m)) return;
      if (m.edgeRedis === 'listening') {
        listening.add(worker);
        if (!announced && listening.size === o.workers) {
          announced = true;
          o.say(`listening on ${m.url} (${o.workers} workers, pids ${Object.values(cluster.workers ?? {}).map((w) => w?.process.pid).join(', ')})`);
          for (const line of o.details) o.say(line);
        }
      } else if (m.edgeRedis === 'metrics?') {
        void collect().then((text) => {
          if (worker.isConnected()) worker.send({ edgeRedis: 'metrics!', id: m.id, text } satisfies Message);
        });
      } else if (m.edgeRedis === 'metrics-part') {
        const c = collections.get(m.id);
        if (!c) return;
        c.parts.push(m.part);
        c.waiting.delete(worker.id);
        if (c.waiting.size === 0) c.done();
      }
    });
  };

  const collect = async (): Promise<string> => {
    const id = ++nextId;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w.isConnected());
    const parts: unknown[] = [];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2_000);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      collections.set(id, { parts, waiting: new Set(workers.map((w) => w.id)), done });
      if (workers.length === 0) done();
      for (const w of workers) w.send({ edgeRedis: 'metrics-collect', id } satisfies Message);
    });
    collections.delete(id);
    return o.merge(parts);
  };

  cluster.on('exit', (worker, code, signal) => {
    listening.delete(worker);
    for (const c of collections.values()) {
      c.waiting.delete(worker.id);
      if (c.waiting.size === 0) c.done();
    }
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(failed ? 1 : 0);
      return;
    }
    if (!announced) {
      // It failed before listening (port taken, Redis URL refused…): it said why; stop them all.
      failed = true;
      stop('SIGTERM', `a worker exited (${signal ?? `code ${code}`}) before the gateway listened`);
      return;
    }
    o.say(`worker ${worker.process.pid} exited (${signal ?? `code ${code}`}); starting another in 1 s`);
    setTimeout(() => {
      if (!stopping) fork();
    }, 1_000).unref();
  });

  const stop = (signal: NodeJS.Signals, why = `${signal} received`) => {
    if (stopping) return;
    stopping = true;
    o.say(`${why}, stopping ${Object.keys(cluster.workers ?? {}).length} workers (each finishes its in-flight requests)`);
    const workers = Object.values(cluster.workers ?? {});
    if (workers.length === 0) process.exit(failed ? 1 : 0);
    for (const w of workers) w?.process.kill('SIGTERM');
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  o.say(`starting ${o.workers} workers (GATEWAY_WORKERS)`);
  for (let i = 0; i < o.workers; i++) fork();
}

/** In a worker: tells the primary this worker listens. */
export function announceListening(url: string): void {
  process.send?.({ edgeRedis: 'listening', url } satisfies Message);
}

/**
 * In a worker: answers the primary's collection requests with `snapshot()`, and returns the
 * function the worker's `/metrics` calls to get the whole gateway's text from the primary.
 */
export function workerMetrics(snapshot: () => Promise<unknown>): () => Promise<string> {
  const pending = new Map<number, (text: string) => void>();
  let nextId = 0;
  process.on('message', (m: unknown) => {
    if (!isMessage(m)) return;
    if (m.edgeRedis === 'metrics-collect') {
      void snapshot().then((part) => process.send?.({ edgeRedis: 'metrics-part', id: m.id, part } satisfies Message));
    } else if (m.edgeRedis === 'metrics!') {
      pending.get(m.id)?.(m.text);
      pending.delete(m.id);
    }
  });
  return () => new Promise<string>((resolve, reject) => {
    const id = ++nextId;
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error('the primary did not answer the metrics request'));
    }, 5_000);
    pending.set(id, (text) => {
      clearTimeout(timer);
      resolve(text);
    });
    process.send?.({ edgeRedis: 'metrics?', id } satisfies Message);
  });
}
