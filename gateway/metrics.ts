/**
 * Prometheus text exposition, kept dependency-free: a few counters, gauges and one histogram.
 * Label values come from closed sets (route names, known Redis command names), so a client cannot
 * grow the series without bound.
 */

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

function labels(obj: Record<string, string>): string {
  const parts = Object.entries(obj).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** What one process counted, as plain data (sent between GATEWAY_WORKERS, see workers.ts). */
export interface MetricsSnapshot {
  requests: [string, number][];
  commands: [string, number][];
  histogram: [string, { counts: number[]; sum: number; count: number }][];
  gauges: [string, number][];
}

/** Gauges that say whether something holds for the whole gateway: the least worker's value. */
const ALL_GAUGES = new Set(['gateway_redis_up']);

function isSnapshot(v: unknown): v is MetricsSnapshot {
  return typeof v === 'object' && v !== null && ['requests', 'commands', 'histogram', 'gauges'].every((k) => Array.isArray((v as Record<string, unknown>)[k]));
}

/** The workers' snapshots as one: counters and histograms summed, gauges summed (or the least). */
export function mergeSnapshots(parts: unknown[]): MetricsSnapshot {
  const requests = new Map<string, number>();
  const commands = new Map<string, number>();
  const histogram = new Map<string, { counts: number[]; sum: number; count: number }>();
  const gauges = new Map<string, number>();
  for (const part of parts.filter(isSnapshot)) {
    for (const [k, v] of part.requests) requests.set(k, (requests.get(k) ?? 0) + v);
    for (const [k, v] of part.commands) commands.set(k, (commands.get(k) ?? 0) + v);
    for (const [k, h] of part.histogram) {
      const into = histogram.get(k) ?? { counts: BUCKETS.map(() => 0), sum: 0, count: 0 };
      h.counts.forEach((c, i) => (into.counts[i] = (into.counts[i] ?? 0) + c));
      into.sum += h.sum;
      into.count += h.count;
      histogram.set(k, into);
    }
    for (const [k, v] of part.gauges) {
      const had = gauges.get(k);
      gauges.set(k, had === undefined ? v : ALL_GAUGES.has(k) ? Math.min(had, v) : had + v);
    }
  }
  return { requests: [...requests], commands: [...commands], histogram: [...histogram], gauges: [...gauges] };
}

export class Metrics {
  #requests = new Map<string, number>();
  #commands = new Map<string, number>();
  #histogram = new Map<string, { counts: number[]; sum: number; count: number }>();
  #gauges = new Map<string, () => number>();

  request(route: string, status: number, seconds: number): void {
    const key = labels({ route, status: String(status) });
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    const hkey = route;
    let h = this.#histogram.get(hkey);
    if (!h) {
      h = { counts: BUCKETS.map(() => 0), sum: 0, count: 0 };
      this.#histogram.set(hkey, h);
    }
    for (let i = 0; i < BUCKETS.length; i++) {
      if (seconds <= (BUCKETS[i] ?? Infinity)) h.counts[i] = (h.counts[i] ?? 0) + 1;
    }
    h.sum += seconds;
    h.count += 1;
  }

  command(name: string): void {
    this.#commands.set(name, (this.#commands.get(name) ?? 0) + 1);
  }

  /** Registers a gauge read at scrape time. */
  gauge(name: string, read: () => number): void {
    this.#gauges.set(name, read);
  }

  snapshot(): MetricsSnapshot {
    return {
      requests: [...this.#requests],
      commands: [...this.#commands],
      histogram: [...this.#histogram].map(([k, h]) => [k, { counts: [...h.counts], sum: h.sum, count: h.count }]),
      gauges: [...this.#gauges].map(([k, read]) => [k, read()]),
    };
  }

  render(): string {
    return renderSnapshot(this.snapshot());
  }
}

/** Prometheus text of a snapshot (one process's, or the workers' merged). */
export function renderSnapshot(snap: MetricsSnapshot): string {
  const out: string[] = [];
  out.push('# HELP gateway_http_requests_total HTTP requests by route and status.');
  out.push('# TYPE gateway_http_requests_total counter');
  for (const [k, v] of snap.requests) out.push(`gateway_http_requests_total${k} ${v}`);
  out.push('# HELP gateway_commands_total Redis commands received, by command.');
  out.push('# TYPE gateway_commands_total counter');
  for (const [k, v] of snap.commands) out.push(`gateway_commands_total${labels({ command: k })} ${v}`);
  out.push('# HELP gateway_request_duration_seconds Time from request to answer, by route.');
  out.push('# TYPE gateway_request_duration_seconds histogram');
  for (const [route, h] of snap.histogram) {
    BUCKETS.forEach((le, i) => out.push(`gateway_request_duration_seconds_bucket${labels({ route, le: String(le) })} ${h.counts[i] ?? 0}`));
    out.push(`gateway_request_duration_seconds_bucket${labels({ route, le: '+Inf' })} ${h.count}`);
    out.push(`gateway_request_duration_seconds_sum${labels({ route })} ${h.sum}`);
    out.push(`gateway_request_duration_seconds_count${labels({ route })} ${h.count}`);
  }
  for (const [name, value] of snap.gauges) {
    out.push(`# TYPE ${name} gauge`);
    out.push(`${name} ${value}`);
  }
  return `${out.join('\n')}\n`;
}
