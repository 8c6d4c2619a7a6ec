/**
 * Watching a child process start: its stdout and stderr as whole lines (a line split across two
 * chunks is joined again), and a promise that settles when a line says it is ready, when it exits
 * first, or when it takes too long. Shared by the gateway's child-process tests
 * (test/gateway/processes.ts) and the browser suite's `npm run dev` (test/browser/stack.ts).
 */
import type { ChildProcess } from 'node:child_process';

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
    const reader = () => {
      let partial = '';
      return (chunk: Buffer) => {
        const lines = (partial + chunk.toString('utf8')).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines.filter(Boolean)) {
          output.push(line);
          if (output.length > keep) output.shift();
          const value = settled ? undefined : ready(line);
          if (value !== undefined) {
            settled = true;
            clearTimeout(timer);
            resolve(value);
          }
        }
      };
    };
    child.stdout?.on('data', reader());
    child.stderr?.on('data', reader());
    void exited.then((code) => {
      clearTimeout(timer);
      if (!settled) reject(new Error(`${what} exited (${code}) before it was ready:\n${tail()}`));
      settled = true;
    });
  });
  return { output, exited, ready: promise };
}
