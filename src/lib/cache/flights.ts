/**
 * Single flight within an isolate: loads of one key share the first one's promise, and an
 * invalidation cuts them off. A load that started before an invalidation read the store before it,
 * so requests arriving after the invalidation must not join it: `invalidate`, `invalidateTag` and
 * `invalidatePattern` drop the matching loads from the registry (the load itself finishes for its
 * own callers, and the Redis side refuses its write: ./scripts.ts).
 *
 * Across isolates the single flight is the read script's lock; this registry only saves the round
 * trips of concurrent requests of one isolate.
 */

const escapeRe = (ch: string) => ch.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');

/** A Redis glob (`*`, `?`, `[…]`, `\x`) as an anchored RegExp over the same keys. */
export function globRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === '\\' && i + 1 < glob.length) out += escapeRe(glob[++i]!);
    else if (ch === '*') out += '[\\s\\S]*';
    else if (ch === '?') out += '[\\s\\S]';
    else if (ch === '[' && glob.indexOf(']', i + 2) !== -1) {
      const end = glob.indexOf(']', i + 2);
      const body = glob.slice(i + 1, end);
      const negate = body.startsWith('^');
      out += `[${negate ? '^' : ''}${Array.from(negate ? body.slice(1) : body, (c) => (c === '-' ? '-' : escapeRe(c))).join('')}]`;
      i = end;
    } else out += escapeRe(ch);
  }
  return new RegExp(`^${out}$`);
}

// Per client: createRedis hands one client per env, so caches built per request still share their
// loads with the other requests of the isolate.
const byClient = new WeakMap<object, Flights<unknown>>();

/** The registry of loads in flight on this client (one per client, shared by every cache built on it). */
export function flightsOf<V>(redis: object): Flights<V> {
  let f = byClient.get(redis);
  if (!f) byClient.set(redis, (f = new Flights<unknown>()));
  return f as Flights<V>;
}

/** Loads in flight in this isolate, by full entry key, with the tags they were read with. */
export class Flights<V> {
  private readonly loads = new Map<string, { load: Promise<V>; tags: readonly string[] }>();

  get(id: string): Promise<V> | undefined {
    return this.loads.get(id)?.load;
  }

  /** Registers `load` until it settles (or an invalidation drops it). */
  add(id: string, load: Promise<V>, tags: readonly string[]): void {
    this.loads.set(id, { load, tags });
    const forget = () => {
      if (this.loads.get(id)?.load === load) this.loads.delete(id);
    };
    load.then(forget, forget);
  }

  /** Drops the loads of these keys, of entries with one of these tags, or of keys matching the glob. */
  drop(what: { id: string } | { tags: readonly string[] } | { glob: string }): void {
    if ('id' in what) return void this.loads.delete(what.id);
    const match = 'glob' in what ? globRegExp(what.glob) : undefined;
    for (const [id, f] of this.loads) {
      if (match ? match.test(id) : f.tags.some((t) => (what as { tags: readonly string[] }).tags.includes(t))) this.loads.delete(id);
    }
  }
}
