/** The bounded block cache handed to `@upstash/ratelimit` (./upstash.ts). */
import { wholeNumber } from '../util.ts';

/**
 * A Map that keeps at most `max` entries, evicting the least recently used; Upstash's block cache
 * is an unbounded Map otherwise, which a flood of distinct identifiers would grow without end.
 */
export class LruMap<K, V> extends Map<K, V> {
  readonly max: number;
  constructor(max: number) {
    super();
    this.max = wholeNumber('LruMap: max', max);
  }
  override get(key: K): V | undefined {
    if (!super.has(key)) return undefined;
    const value = super.get(key) as V;
    super.delete(key);
    super.set(key, value);
    return value;
  }
  override set(key: K, value: V): this {
    super.delete(key);
    super.set(key, value);
    for (const oldest of super.keys()) {
      if (this.size <= this.max) break;
      super.delete(oldest);
    }
    return this;
  }
}
