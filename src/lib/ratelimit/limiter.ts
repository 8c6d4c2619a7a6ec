/**
 * What every limiter shares (identities, per-call limits, the result, the time budget) and the
 * exact limiter of ./scripts.ts: one script per check, all or nothing over every limit × identity part.
 */
import { RateLimitError } from '../errors.ts';
import type { KeySchema } from '../keys.ts';
import { runScript } from '../script.ts';
import { hex, randomBytes, wholeNumber, withTimeout } from '../util.ts';
import { SCRIPTS } from './scripts.ts';
import type { CompoundLimit, Identity, Limiter, LimitOptions, LimitResult, PolicyState, RatelimitRedis } from './types.ts';

const NAME = /^[\w.-]+$/;
export const DEFAULT_TIMEOUT_MS = 1000;

export function checkName(what: string, name: string): void {
  if (!NAME.test(name)) throw new TypeError(`ratelimit: ${what} must match ${NAME}, got "${name}"`);
}

/** The identity's parts with a value: `[['id', 'u1']]` for a string, else the named parts. */
export function parts(identity: Identity): [string, string][] {
  const list: [string, string][] = typeof identity === 'string' ? [['id', identity]] : Object.entries(identity).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== '');
  if (list.length === 0 || list.some(([, v]) => v === '')) throw new TypeError('ratelimit: empty identity');
  return list;
}

/** One string for a whole identity: `u1`, or `user:u1|ip:203.0.113.7`. */
export function flatten(identity: Identity): string {
  const list = parts(identity);
  return typeof identity === 'string' ? identity : list.map(([k, v]) => `${k}:${v}`).join('|');
}

/** The limit of `name` for this call: the per-call override, else the configured one. */
export function limitFor(limit: LimitOptions['limit'], name: string, count: number, fallback: number): number {
  const value = typeof limit === 'number' ? (count === 1 ? limit : NaN) : (limit?.[name] ?? fallback);
  if (Number.isNaN(value)) throw new TypeError('ratelimit: a number `limit` needs a one-limit limiter; pass { [name]: n }');
  return wholeNumber('ratelimit: limit', value);
}

/** The result: the binding limit is a refusing one (latest reset), else the one with the least remaining. */
export function toResult(success: boolean, policies: PolicyState[], pending: Promise<unknown>, cacheBlock = false): LimitResult {
  const failed = policies.filter((p) => !p.success);
  const pick = success
    ? policies.reduce((a, b) => (b.remaining < a.remaining || (b.remaining === a.remaining && b.reset > a.reset) ? b : a))
    : failed.reduce((a, b) => (b.reset > a.reset ? b : a));
  return {
    success, limit: pick.limit, remaining: pick.remaining, reset: pick.reset, pending,
    ...(cacheBlock ? { reason: 'cacheBlock' as const } : {}),
    failed: [...new Set(failed.map((p) => p.name))], policies,
  };
}

/**
 * The budget is raced around the WHOLE client call, so the client's own network retries happen
 * inside it and cannot stretch it; past it the call is abandoned (it may still land once).
 */
export function withBudget<T>(work: Promise<T>, ms: number, name: string): Promise<T> {
  const failed = work.catch((cause: unknown) => {
    throw new RateLimitError('unavailable', name, { cause });
  });
  if (!(ms > 0 && Number.isFinite(ms))) return failed;
  return withTimeout(failed, ms, () => new RateLimitError('timeout', name));
}

/**
 * The exact limiter: every (limit, identity part) in one script. A compound policy's keys share the
 * hash tag of its name (one Cluster slot, the price of atomic checks across parts); a lone sliding
 * log tags by name + identity and spreads over the cluster.
 */
export function scriptLimiter(redis: RatelimitRedis, name: string, keys: KeySchema, limits: readonly CompoundLimit[], compound: boolean): Limiter {
  return {
    name,
    limit(identity, options = {}) {
      const cost = wholeNumber('ratelimit: cost', options.cost ?? 1, { min: 0 });
      const ids: [string, string][] = compound ? parts(identity) : [['', flatten(identity)]];
      const entries: (PolicyState & { key: string; kind: string })[] = [];
      for (const l of limits) {
        const limit = limitFor(options.limit, l.name, limits.length, l.limit);
        for (const [kind, id] of ids) {
          if (l.by !== undefined && l.by !== kind) continue;
          const key = compound ? keys.slotted('rl', name, l.name, kind, id) : keys.slotted('rl', `${name}:${id}`);
          if (entries.some((e) => e.key === key)) continue;
          entries.push({ key, kind: l.algorithm === 'fixedWindow' ? 'fixed' : 'log', name: l.name, ...(compound ? { by: kind } : {}), success: true, limit, remaining: 0, reset: 0, windowMs: l.windowMs });
        }
      }
      if (entries.length === 0) throw new TypeError(`ratelimit "${name}": no limit applies to identity parts ${ids.map(([k]) => k).join(', ')}`);
      const args = [hex(randomBytes(8)), cost, ...entries.flatMap((e) => [e.kind, e.limit, e.windowMs])];
      const work = runScript<number[]>(redis, SCRIPTS.limit, entries.map((e) => e.key), args).then((reply) => {
        const now = Date.now();
        const policies = entries.map(({ key: _k, kind: _t, ...p }, i): PolicyState => ({
          ...p, success: reply[i * 4 + 1] === 1, remaining: Number(reply[i * 4 + 2]), reset: now + Number(reply[i * 4 + 3]),
        }));
        return toResult(reply[0] === 1, policies, Promise.resolve());
      });
      return withBudget(work, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, name);
    },
  };
}
