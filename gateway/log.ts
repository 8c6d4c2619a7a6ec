/**
 * The gateway's log: one JSON line per notable event (pino), with `level` as a word, an ISO time,
 * `msg`, and fields such as `reqId`, `route`, `status`, `redis` (a URL with its password masked)
 * and `err` ({@link errorFields}).
 *
 * What never goes in: tokens, Authorization headers, command names' arguments, request paths (the
 * path form carries arguments), and error text Redis or a client could have filled with data.
 * Errors are logged through {@link errorFields} only (their type and code, never a message or a
 * stack); the `redact` list is a second fence for fields that should never have been passed.
 */
import pino, { type Logger } from 'pino';
import { isReplyError } from './connect.ts';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * A logger at `level`, writing each JSON line to `sink` (without its newline), or to stdout
 * synchronously (so the last lines before `process.exit` are not lost).
 */
export function createLogger(level: LogLevel, sink?: (line: string) => void): Logger {
  const options: pino.LoggerOptions = {
    name: 'edge-redis-gateway',
    level,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: ['token', 'authorization', 'password', 'headers.authorization', '*.token', '*.password'], censor: '[redacted]' },
  };
  const destination: pino.DestinationStream = sink
    ? { write: (line: string) => sink(line.endsWith('\n') ? line.slice(0, -1) : line) }
    : pino.destination({ dest: 1, sync: true });
  return pino(options, destination);
}

/** An error as one short word for a log field: its code when it has one, else its class. */
export function errorCode(err: unknown): string {
  const f = errorFields(err);
  return f.code ?? f.type;
}

/**
 * What of an error may be logged: its class, and a code when it has one (`ECONNREFUSED`, or the
 * first word of a Redis error such as `NOPERM`, whose text may quote a key or an argument).
 */
export function errorFields(err: unknown): { type: string; code?: string } {
  if (!(err instanceof Error)) return { type: typeof err };
  const type = err.name;
  const code = 'code' in err ? err.code : undefined;
  if (typeof code === 'string' && code !== '') return { type, code };
  const word = isReplyError(err) ? /^[A-Z][A-Z0-9_-]*/.exec(err.message)?.[0] : undefined;
  return word ? { type, code: word } : { type };
}
