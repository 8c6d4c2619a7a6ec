/**
 * Counts round trips to the Redis gateway: every HTTP request the code under test makes to the
 * gateway URL while `fn` runs, with the commands each one carried. `globalThis.fetch` is wrapped
 * only for the duration of `fn`; tests inside one file run one after another in their own isolate,
 * so the count belongs to that test alone.
 */
export interface Trip {
  /** `/`, `/pipeline`, `/multi-exec`, … */
  path: string;
  /** Command names, lower-case, in request order. */
  commands: string[];
}

export interface Counted<T> {
  result: T;
  trips: Trip[];
  /** `trips.length` */
  count: number;
  /** Every command name across all trips. */
  commands: string[];
}

function commandsOf(body: unknown): string[] {
  if (typeof body !== 'string') return [];
  try {
    const doc: unknown = JSON.parse(body);
    if (!Array.isArray(doc)) return [];
    if (doc.length === 0) return [];
    const batch: unknown[] = Array.isArray(doc[0]) ? doc : [doc];
    return batch.map((cmd) => (Array.isArray(cmd) && typeof cmd[0] === 'string' ? cmd[0].toLowerCase() : '?'));
  } catch {
    return [];
  }
}

export async function countTrips<T>(gatewayUrl: string, fn: () => Promise<T>): Promise<Counted<T>> {
  const trips: Trip[] = [];
  const original = globalThis.fetch;
  const base = gatewayUrl.replace(/\/$/, '');
  globalThis.fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (url.startsWith(base)) {
      trips.push({ path: url.slice(base.length) || '/', commands: commandsOf(init?.body) });
    }
    return original(input, init);
  }) as typeof fetch;
  try {
    const result = await fn();
    return { result, trips, count: trips.length, commands: trips.flatMap((t) => t.commands) };
  } finally {
    globalThis.fetch = original;
  }
}
