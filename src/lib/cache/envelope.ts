/**
 * The stored entry: one JSON envelope, `{"c":createdAt,"f":freshUntil,"s":staleUntil,"v":value,
 * "t":{tag:version},"n":1?}`, times in ms on Redis's clock, expiring at `staleUntil` (PX). The
 * header (`c`, `f`, `s`) is written by the write script (./scripts.ts) from Redis time and always
 * comes first, so the read script can match it without decoding the value; the body (`v`, `t`, `n`)
 * is {@link body}'s. `n` marks a cached null/undefined ("no such thing"), which skips validation.
 */
import { storedObject } from '../util.ts';
import type { CacheReason } from './types.ts';

export interface Envelope {
  c: number;
  f: number;
  s: number;
  v: unknown;
  t: Record<string, unknown>;
  n: boolean;
}

/** The body the write script appends to the header it writes: `"v":…,"t":{…}[,"n":1]}`. */
export function body(value: unknown, versions: ReadonlyMap<string, string>): string {
  return JSON.stringify({ v: value, t: Object.fromEntries(versions), ...(value == null ? { n: 1 } : {}) }).slice(1);
}

/** A stored value as an envelope, or undefined when it is not one (garbage, another writer's value). */
export function parseEnvelope(raw: unknown): Envelope | undefined {
  const doc = storedObject(raw);
  if (!doc) return undefined;
  const { c, f, s, v, t, n } = doc;
  if (typeof c !== 'number' || typeof f !== 'number' || typeof s !== 'number') return undefined;
  if (t !== undefined && (typeof t !== 'object' || t === null)) return undefined;
  return { c, f, s, v, t: (t ?? {}) as Record<string, unknown>, n: n === 1 };
}

/** `(value) => boolean` (a type guard), a zod-like `{ parse }` that throws, or a Standard Schema. */
export type Validator<T> =
  | ((value: unknown) => boolean)
  | { parse(value: unknown): T }
  | { readonly '~standard': { validate(value: unknown): StandardResult<T> | Promise<StandardResult<T>> } };
type StandardResult<T> = { readonly value: T; readonly issues?: undefined } | { readonly issues: ReadonlyArray<unknown> };

/** The value if it passes `validate` (or there is none), else undefined. Never throws. */
export async function validated<T>(validate: Validator<T> | undefined, value: unknown): Promise<{ value: T } | undefined> {
  if (!validate) return { value: value as T };
  try {
    if (typeof validate === 'function') return validate(value) ? { value: value as T } : undefined;
    if ('~standard' in validate) {
      const r = await validate['~standard'].validate(value);
      return r.issues ? undefined : { value: r.value };
    }
    return { value: validate.parse(value) };
  } catch {
    return undefined;
  }
}

/** What one read script answers, plus the current versions of the tags read with it. */
export interface Read {
  raw: unknown;
  now: number;
  got: number;
  /** createdAt of the stored entry, '-' when none could be read. */
  c: string;
  versions: Map<string, string>;
}

/** The judgement of one read: servable (fresh or stale) or why not. */
export type Verdict<T> = { state: 'fresh' | 'stale'; value: T; env: Envelope } | { state: Extract<CacheReason, 'absent' | 'tag' | 'invalid'> };

/**
 * Judges a read: absent, past its stale time, stamped with a tag version that is not the current
 * one (or missing one of `tags`), failing `validate`, or servable. `onInvalid` hears of a stored
 * value that is not usable.
 */
export async function judge<T>(r: Read, tags: readonly string[], validate: Validator<T> | undefined, onInvalid: () => void): Promise<Verdict<T>> {
  if (r.raw == null) return { state: 'absent' };
  const env = parseEnvelope(r.raw);
  if (!env) {
    onInvalid();
    return { state: 'invalid' };
  }
  if (r.now >= env.s) return { state: 'absent' };
  for (const tag of new Set([...tags, ...Object.keys(env.t)])) {
    if (!Object.hasOwn(env.t, tag) || env.t[tag] !== r.versions.get(tag)) return { state: 'tag' };
  }
  // Only a stored null/undefined skips the check, so a tampered "n" cannot smuggle a value past it.
  const checked = env.n && env.v == null ? { value: env.v as T } : await validated(validate, env.v);
  if (!checked) {
    onInvalid();
    return { state: 'invalid' };
  }
  return { state: r.now < env.f ? 'fresh' : 'stale', value: checked.value, env };
}
