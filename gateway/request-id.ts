/**
 * Request ids: the caller's `x-request-id` when it is sane (1 to 128 characters of
 * `A-Z a-z 0-9 . _ : -`, so it can go in a header and a log line as is), a fresh one otherwise.
 * Fresh ids are a random per-process prefix and a counter (`3f9c1a7b-1a`): unique across restarts
 * and worker processes, and cheaper per request than a random UUID.
 */
import { randomBytes } from 'node:crypto';

const SANE = /^[A-Za-z0-9._:-]{1,128}$/;

export class RequestIds {
  readonly #prefix = `${randomBytes(4).toString('hex')}-`;
  #n = 0;

  /** A fresh id. */
  next(): string {
    return this.#prefix + (++this.#n).toString(36);
  }

  /** The incoming header's id when it is sane, else a fresh one (a repeated header arrives joined with ", ", so it is not). */
  from(header: string | string[] | undefined): string {
    return typeof header === 'string' && SANE.test(header) ? header : this.next();
  }
}
