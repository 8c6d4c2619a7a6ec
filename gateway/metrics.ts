/**
 * The gateway's Prometheus metrics, on prom-client registries of its own (never prom-client's
 * global one, so several gateways in one process keep apart):
 * - the process's: prom-client's default Node metrics (resident memory, CPU, event-loop lag, GC,
 *   open handles and file descriptors…), made once per process and shared, since they describe the
 *   process whichever gateway is asked;
 * - the gateway's: HTTP requests by route and status, Redis commands by name, request durations by
 *   route, open SSE streams, whether the default Redis is up.
 *
 * The request path only adds to plain numbers (no label hashing, no strings per request, which
 * prom-client's `inc`/`observe` do on every call even on bound children); `collect` hooks and
 * {@link RouteHistogram.get} turn them into prom-client values when /metrics is scraped. Label
 * values come from closed sets (route names, known Redis command names), so a client cannot grow
 * the series without bound.
 *
 * For several worker processes (GATEWAY_WORKERS, workers.ts), each worker sends
 * {@link Metrics.snapshot} (its registries as JSON) and the primary renders them with
 * {@link renderSnapshots}, i.e. prom-client's `AggregatorRegistry.aggregate`: counters and
 * histograms add up across workers, `gateway_redis_up` takes the minimum, the process metrics are
 * combined with prom-client's own aggregators. {@link Metrics.registries} also suits
 * `AggregatorRegistry.setRegistries` should prom-client's own cluster messaging be used instead.
 */
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue, type MetricValueWithName } from 'prom-client';

/** One process's metrics as data, one array per registry (`Registry.getMetricsAsJSON`). */
export type MetricsSnapshot = MetricObjectWithValues<MetricValue<string>>[][];

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** HTTP statuses are three digits; anything else is counted as 0 rather than dropped. */
const STATUS_SLOTS = 1000;

let processRegistry: Registry | undefined;

/** prom-client's default metrics, registered once per process on a registry of their own. */
export function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** What one route has seen: statuses by code, durations by bucket (not cumulative). */
class RouteTally {
  readonly statuses = new Float64Array(STATUS_SLOTS);
  readonly buckets = new Float64Array(BUCKETS.length);
  readonly route: string;
  sum = 0;
  count = 0;
  constructor(route: string) {
    this.route = route;
  }
}

declare module 'prom-client' {
  interface Histogram<T extends string> {
    /** What prom-client's registry renders as text (and `get` builds on); untyped in its .d.ts. */
    getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<T>>>;
  }
}

const DURATION = { name: 'gateway_request_duration_seconds', help: 'Time from request to answer, by route.' } as const;

/**
 * `gateway_request_duration_seconds` read from the routes' tallies. Its series print `route` before
 * `le` (prom-client's own histogram puts `le` first), as the gateway always has. prom-client's
 * registry renders text through `getForPromString` when a metric has one (and its `get` calls it),
 * so both answer the tallies.
 */
class RouteHistogram extends Histogram<'route' | 'le'> {
  readonly routes: Map<string, RouteTally>;
  constructor(registry: Registry, routes: Map<string, RouteTally>) {
    super({ ...DURATION, labelNames: ['route'], buckets: BUCKETS, registers: [registry] });
    this.routes = routes;
  }

  override get(): ReturnType<Histogram<'route' | 'le'>['get']> {
    return this.getForPromString();
  }

  override async getForPromString(): ReturnType<Histogram<'route' | 'le'>['get']> {
    const base = await super.getForPromString();
    const name = DURATION.name;
    const values: Awaited<ReturnType<Histogram<'route' | 'le'>['get']>>['values'] = [];
    for (const t of this.routes.values()) {
      let acc = 0;
      BUCKETS.forEach((le, i) => {
        acc += t.buckets[i] ?? 0;
        values.push({ metricName: `${name}_bucket`, labels: { route: t.route, le }, value: acc });
      });
      values.push({ metricName: `${name}_bucket`, labels: { route: t.route, le: '+Inf' }, value: t.count });
      values.push({ metricName: `${name}_sum`, labels: { route: t.route }, value: t.sum });
      values.push({ metricName: `${name}_count`, labels: { route: t.route }, value: t.count });
    }
    return { ...base, values };
  }
}

export class Metrics {
  /** The gateway's own metrics (not the process's: see {@link registries}). */
  readonly registry = new Registry();
  readonly #routes = new Map<string, RouteTally>();
  readonly #commands = new Map<string, { n: number }>();

  constructor() {
    const routes = this.#routes;
    const commands = this.#commands;
    new Counter({
      name: 'gateway_http_requests_total',
      help: 'HTTP requests by route and status.',
      labelNames: ['route', 'status'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const t of routes.values()) {
          t.statuses.forEach((n, status) => {
            if (n > 0) this.inc({ route: t.route, status: String(status) }, n);
          });
        }
      },
    });
    new Counter({
      name: 'gateway_commands_total',
      help: 'Redis commands received, by command.',
      labelNames: ['command'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [command, c] of commands) this.inc({ command }, c.n);
      },
    });
    new RouteHistogram(this.registry, routes);
  }

  /** The process's registry and the gateway's, for `AggregatorRegistry.setRegistries`. */
  get registries(): Registry[] {
    return [processMetrics(), this.registry];
  }

  request(route: string, status: number, seconds: number): void {
    let t = this.#routes.get(route);
    if (!t) {
      t = new RouteTally(route);
      this.#routes.set(route, t);
    }
    const slot = status >= 0 && status < STATUS_SLOTS ? status : 0;
    t.statuses[slot] = (t.statuses[slot] ?? 0) + 1;
    let i = 0;
    while (i < BUCKETS.length && seconds > (BUCKETS[i] ?? Infinity)) i++;
    if (i < BUCKETS.length) t.buckets[i] = (t.buckets[i] ?? 0) + 1;
    t.sum += seconds;
    t.count += 1;
  }

  command(name: string): void {
    const c = this.#commands.get(name);
    if (c) c.n += 1;
    else this.#commands.set(name, { n: 1 });
  }

  /**
   * A gauge read at scrape time. `min` across worker processes suits a 0/1 "up" gauge (up only
   * where every worker is), `sum` a count.
   */
  gauge(name: string, help: string, read: () => number, aggregator: 'sum' | 'min' = 'sum'): void {
    new Gauge({
      name, help, aggregator, registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** This process's metrics as data, for the primary of GATEWAY_WORKERS ({@link renderSnapshots}). */
  snapshot(): Promise<MetricsSnapshot> {
    return Promise.all(this.registries.map((r) => r.getMetricsAsJSON()));
  }

  /** The `content-type` of {@link render}'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text exposition of the process's metrics and the gateway's. */
  async render(): Promise<string> {
    const [proc, own] = await Promise.all(this.registries.map((r) => r.metrics()));
    return `${proc}\n${own}`;
  }
}

/** The workers' {@link Metrics.snapshot}s as one Prometheus text (what is not a snapshot is left out). */
export async function renderSnapshots(parts: unknown[]): Promise<string> {
  const registries = parts.filter((p): p is unknown[] => Array.isArray(p)).flat().filter((r): r is object[] => Array.isArray(r));
  return AggregatorRegistry.aggregate(registries).metrics();
}
