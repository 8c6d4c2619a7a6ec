/**
 * The one copy of the small helpers every pattern needs: encodings, digests, random tokens, the
 * number check of options, a time budget and the client's two forms of a JSON reply. Internal: not
 * an entry point of the package.
 */

const utf8 = new TextEncoder();

/** Lower-case hex of the bytes. */
export function hex(bytes: ArrayBuffer | Uint8Array): string {
  return Array.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Unpadded base64url (RFC 4648 §5) of the bytes. */
export function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** `n` random bytes from the platform's CSPRNG. */
export const randomBytes = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));

/** The digest of `text` (UTF-8) by WebCrypto. */
export async function digest(algorithm: 'SHA-1' | 'SHA-256', text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest(algorithm, utf8.encode(text)));
}

/**
 * `n` as it is when it is a whole number in `[min, max]`, else a RangeError naming `what`.
 *
 * @example
 * wholeNumber('leaseMs', options.leaseMs ?? 10_000); // 10000, or RangeError "leaseMs must be a whole number ≥ 1, got 0"
 */
export function wholeNumber(what: string, n: number, { min = 1, max = Number.MAX_SAFE_INTEGER }: { min?: number; max?: number } = {}): number {
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in [${min}, ${max}]`;
    throw new RangeError(`${what} must be a whole number ${range}, got ${n}`);
  }
  return n;
}

/**
 * Races `work` against a budget of `ms`: past it, rejects with `late()` (the work may still land;
 * its own later failure is swallowed, since the timeout already reported it).
 */
export function withTimeout<T>(work: Promise<T>, ms: number, late: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  work.catch(() => undefined);
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(late()), ms);
  });
  return Promise.race([work, deadline]).finally(() => timer !== undefined && clearTimeout(timer));
}

/**
 * A stored value's fields: the client parses a stored JSON string unless told not to, so `raw` may
 * be the string or the value; anything that is not a JSON object (garbage, another writer's value)
 * is undefined.
 */
export function storedObject(raw: unknown): Record<string, unknown> | undefined {
  let doc = raw;
  if (typeof raw === 'string') {
    try {
      doc = JSON.parse(raw);
    } catch {
      return undefined;
    }
  }
  return typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as Record<string, unknown>) : undefined;
}

/** A script reply that is JSON: the client parses replies that look like JSON unless told not to; accept both forms. */
export function jsonReply(reply: unknown): unknown {
  return typeof reply === 'string' ? JSON.parse(reply) : reply;
}

/** `ms` of sleep. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
