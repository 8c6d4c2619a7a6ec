/**
 * How many reply bytes one request may hold (GATEWAY_MAX_REPLY_BYTES). Replies are counted as they
 * arrive, command by command; one that does not fit is dropped at once and its command answers an
 * error, so a request never holds more than the limit however many large values it asks for, and
 * the JSON built from its replies stays bounded too.
 *
 * With ioredis a reply is read whole before the gateway sees it, so the gateway's memory still
 * peaks at about one reply (Redis caps a string at 512 MB, `proto-max-bulk-len`); a connection that
 * reads RESP itself could stop at the length header.
 */

/** Bytes a reply takes: its strings' lengths plus a little per element. */
export function replySize(value: unknown): number {
  if (Buffer.isBuffer(value)) return value.length + 16;
  if (typeof value === 'string') return value.length + 16;
  if (Array.isArray(value)) {
    let n = 16;
    for (const v of value) n += replySize(v);
    return n;
  }
  if (value instanceof Error) return value.message.length + 16;
  return 16;
}

export class ReplyTooLargeError extends Error {
  override name = 'ReplyTooLargeError';
}

export class ReplyBudget {
  readonly limit: number;
  #used = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Counts `value` if it fits in what is left; false (and nothing counted) if it does not. */
  take(value: unknown): boolean {
    const size = replySize(value);
    if (this.#used + size > this.limit) return false;
    this.#used += size;
    return true;
  }

  error(): ReplyTooLargeError {
    return new ReplyTooLargeError(
      `ERR the reply is over the gateway's ${this.limit} byte limit for one request (GATEWAY_MAX_REPLY_BYTES); read large values in parts (GETRANGE, LRANGE, HSCAN, SSCAN, ZRANGE … LIMIT)`,
    );
  }
}
