/**
 * Tag invalidation by versions that are never reused, so that a lost tag key never reads as an old
 * version again.
 *
 * A tag's version is an opaque random token, not a counter. `invalidateTag` SETs a new one; a read
 * SETs one only where none exists (`SET NX GET`, one command per tag in the read's round trip). So
 * a lost tag key never reads as "version 0" (an entry stamped before the loss could match it) and a
 * counter restarted after a loss can never climb back to an old entry's stamp: a missing version
 * means "unknown", and every entry stamped before it is dead.
 */
import type { RedisCommands } from '../redis.ts';
import { hex, randomBytes } from '../util.ts';

/** A new tag version: `v` + 72 random bits in hex (never parsed as a number by the client). */
export const newTagVersion = (): string => `v${hex(randomBytes(9))}`;

/**
 * The current version of each tag, creating the ones that are missing (a lost tag key): one
 * `SET NX GET` per tag, all issued in the caller's tick so they join its round trip.
 */
export function readTagVersions(redis: RedisCommands<'set'>, tagKey: (tag: string) => string, tags: readonly string[]): Promise<Map<string, string>> {
  return Promise.all(
    tags.map((t) => {
      const mine = newTagVersion();
      return redis.set(tagKey(t), mine, { nx: true, get: true }).then((had: unknown) => [t, had == null ? mine : String(had)] as const);
    }),
  ).then((pairs) => new Map(pairs));
}

/** `SET` of a new version per tag: every entry stamped with an older one is dead. One command per tag. */
export function bumpTagVersions(redis: RedisCommands<'set'>, tagKey: (tag: string) => string, tags: readonly string[]): Promise<unknown>[] {
  return tags.map((t) => redis.set(tagKey(t), newTagVersion()));
}
