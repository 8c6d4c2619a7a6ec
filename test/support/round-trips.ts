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
  /**
   * 1 for a request sent before any other gateway request of this count had answered, else 1 + the
   * highest wave among those that had answered when it was sent: the length of the chain of
   * round trips that had to finish before it could start.
   */
  wave: number;
  /** Whether the request had answered when `fn` resolved (false: it ran in `waitUntil`). */
  beforeResult: boolean;
}

export interface Counted<T> {
  result: T;
  trips: Trip[];
  /** `trips.length` */
  count: number;
  /** Every command name across all trips. */
  commands: string[];
  /** Round trips on the critical path: the highest `wave` among trips that answered before `fn` resolved. */
  criticalPath: number;
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
  const answered: Trip[] = [];
  let resolved = false;
  const original = globalThis.fetch;
  const base = gatewayUrl.replace(/\/$/, '');
  globalThis.fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (!url.startsWith(base)) return original(input, init);
    const trip: Trip = {
      path: url.slice(base.length) || '/',
      commands: commandsOf(init?.body),
      wave: 1 + Math.max(0, ...answered.map((t) => t.wave)),
      beforeResult: false,
    };
    trips.push(trip);
    try {
      return await original(input, init);
    } finally {
      trip.beforeResult = !resolved;
      answered.push(trip);
    }
  }) as typeof fetch;
  try {
    const result = await fn();
    resolved = true;
    const critical = trips.filter((t) => t.beforeResult);
    return {
      result,
      trips,
      count: trips.length,
      commands: trips.flatMap((t) => t.commands),
      criticalPath: Math.max(0, ...critical.map((t) => t.wave)),
    };
  } finally {
    globalThis.fetch = original;
  }
}
