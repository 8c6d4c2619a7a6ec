/**
 * Watching a child process start: its stdout and stderr as whole lines (a line split across two
 * chunks is joined again), and a promise that settles when a line says it is ready, when it exits
 * first, or when it takes too long. Shared by the gateway's child-process tests
 * (test/gateway/processes.ts), the browser suite's `npm run dev` (test/browser/stack.ts) and, for its
 * lines only, redis-server (test/support/redis-process.ts).
 */
import type { ChildProcess } from 'node:child_process';

/**
 * Calls `onLine` for each non-empty line the child prints on stdout or stderr, whole: a line split
 * across two chunks (or a UTF-8 character split across two) is joined again before it is passed on.
 */
export function onLines(child: ChildProcess, onLine: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    stream.setEncoding('utf8');
    let partial = '';
    stream.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line) onLine(line);
    });
  }
}

export interface WatchedChild<T> {
  /** The lines printed so far (the last `keep`). */
  output: string[];
  /** The exit code (null after a signal), once it has exited. */
  exited: Promise<number | null>;
  /** What `ready` returned for the first line it accepted. */
  ready: Promise<T>;
}

/**
 * @example
 * const { ready } = watchChild(child, 'the gateway', (line) => /listening on (\S+)/.exec(line)?.[1], 10_000);
 * const url = await ready;
 */
export function watchChild<T>(child: ChildProcess, what: string, ready: (line: string) => T | undefined, timeoutMs: number, keep = Infinity): WatchedChild<T> {
  const output: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const tail = () => output.slice(-30).join('\n');
  const promise = new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      reject(new Error(`${what} was not ready in ${timeoutMs / 1000} s:\n${tail()}`));
    }, timeoutMs);
    onLines(child, (line) => {
      output.push(line);
      if (output.length > keep) output.shift();
      const value = settled ? undefined : ready(line);
      if (value !== undefined) {
        settled = true;
        clearTimeout(timer);
        resolve(value);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      if (!settled) reject(new Error(`${what} exited (${code}) before it was ready:\n${tail()}`));
      settled = true;
    });
  });
  return { output, exited, ready: promise };
}
