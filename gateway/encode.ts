/**
 * Redis replies → the JSON the Upstash client decodes.
 *
 * The Redis client runs with raw replies: strings (simple and bulk) arrive as Buffers, integers as
 * decimal strings (`stringNumbers`), so an integer past 2^53 keeps every digit; we write those
 * digits straight into the JSON text as a number. With `Upstash-Encoding: base64` every string is
 * base64 at every depth (`OK` included: the client decodes `"OK"` inside an array to garbage
 * otherwise). Errors are never encoded. An error nested in an array (a Lua table holding
 * `redis.error_reply`) becomes `{"error": "..."}`: a stable shape that never crashes the client.
 */

export function isRedisError(value: unknown): value is Error {
  return value instanceof Error;
}

const INTEGER = /^-?\d+$/;

/** Encodes one reply value as JSON text. */
export function encodeReply(value: unknown, base64: boolean): string {
  if (value === null || value === undefined) return 'null';
  if (Buffer.isBuffer(value)) return JSON.stringify(base64 ? value.toString('base64') : value.toString('utf8'));
  if (typeof value === 'string') return INTEGER.test(value) ? value : JSON.stringify(base64 ? Buffer.from(value).toString('base64') : value);
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : JSON.stringify(String(value));
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'boolean') return value ? '1' : '0';
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      out += encodeReply(value[i], base64);
    }
    return `${out}]`;
  }
  if (isRedisError(value)) return `{"error":${JSON.stringify(errorText(value))}}`;
  return 'null';
}

/** `{"result": …}` */
export function resultEntry(value: unknown, base64: boolean): string {
  return `{"result":${encodeReply(value, base64)}}`;
}

/** `{"error": "…"}`, the text never encoded. */
export function errorEntry(message: string): string {
  return `{"error":${JSON.stringify(message)}}`;
}

/** Redis's error text, verbatim (the client's NOSCRIPT → EVAL fallback reads it). */
export function errorText(err: Error): string {
  return err.message;
}
