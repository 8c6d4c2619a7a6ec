/**
 * What the benchmarks share: reading their `BENCH_*` settings, describing the machine, and the
 * numbers and tables they print. Each benchmark keeps its own workloads and measuring loop.
 */
import os from 'node:os';
import { join } from 'node:path';

/** The repository's top folder (bench/ is one below it). */
export const ROOT = join(import.meta.dirname, '..');

/** A progress line on stdout, marked as the bench's own among its children's output. */
export function say(line: string): void {
  process.stdout.write(`bench: ${line}\n`);
}

/** The comma-separated items of env var `name` (`fallback` when unset), trimmed, empty ones dropped. */
export function envList(name: string, fallback: string): string[] {
  return (process.env[name] ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * `BENCH_CONCURRENCY`: the numbers of requests in flight, one cell each.
 * @example envConcurrencies('1,8,32') // [1, 8, 32] unless BENCH_CONCURRENCY says otherwise
 */
export function envConcurrencies(fallback: string): number[] {
  return envList('BENCH_CONCURRENCY', fallback).map((c) => {
    const n = Number(c);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`BENCH_CONCURRENCY must list positive whole numbers, got "${c}"`);
    return n;
  });
}

/**
 * The items of env var `variable` that are among `known` (all of them by default), in the order of
 * `known`; a name that is not known is an error naming it.
 * @example envPick('BENCH_LOADGEN', ['autocannon', 'wrk']) // ['wrk'] when BENCH_LOADGEN=wrk
 */
export function envPick<N extends string>(variable: string, known: readonly N[]): N[] {
  const wanted = envList(variable, known.join(','));
  const unknown = wanted.filter((w) => !known.some((k) => k === w));
  if (unknown.length > 0) throw new Error(`${variable}: unknown name(s) ${unknown.join(', ')} (known: ${known.join(', ')})`);
  return known.filter((k) => wanted.includes(k));
}

/** `BENCH_WORKLOADS`: the workloads it names (all by default), in the order of `all`. */
export function envWorkloads<W extends { name: string }>(all: readonly W[]): W[] {
  const names = envPick('BENCH_WORKLOADS', all.map((w) => w.name));
  return all.filter((w) => names.includes(w.name));
}

/** OS, CPUs, memory and Node version, printed with every result so numbers keep their context. */
export function machineDescription(): string {
  const cpus = os.cpus();
  return (
    `${os.type()} ${os.release()} ${os.arch()}, ${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ` +
    `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, Node ${process.version}`
  );
}

/** The nearest-rank `p`th percentile of ascending `sorted`; NaN when it is empty. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

/** A rate or count, rounded, with thousands separators. */
export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Milliseconds: two decimals below 10, one above. */
export function fmtMs(n: number): string {
  return n < 10 ? n.toFixed(2) : n.toFixed(1);
}

/** A Markdown table: the first `textColumns` columns left-aligned, the rest right-aligned. */
export function table(header: string[], rows: string[][], textColumns: number): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((cell, c) => (c < textColumns ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join(' | ')} |`;
  const rule = `|${widths.map((w, c) => (c < textColumns ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}
