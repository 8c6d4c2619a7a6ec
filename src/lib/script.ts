/**
 * How every pattern runs Lua: EVALSHA of a pinned SHA, and EVAL of the source only when Redis
 * answers NOSCRIPT (a script cache that is cold or was flushed). Any other failure is passed on
 * untouched, for the caller to wrap in its own error.
 *
 * Each pattern pins its scripts' SHAs in source (and checks them against sha1(src) in its tests), so
 * the EVALSHA is issued synchronously, in the same tick as the caller's other commands, and
 * auto-pipelining can batch them: hashing at run time is async and would miss the batch. A warm call
 * is one command; a cold one is two (the NOSCRIPT answer, then the EVAL).
 *
 * @example
 * const RELEASE = { src: `return redis.call('DEL', KEYS[1])`, sha: '…' } as const satisfies LuaScript;
 * const n = await runScript<number>(redis, RELEASE, [key], []);
 */
import type { RedisCommands } from './redis.ts';

/**
 * A Lua script with its SHA1. `ro` marks a read-only script: it runs by EVALSHA_RO (EVAL_RO), which
 * a replica or a read-only token may serve and Redis refuses to let write.
 */
export interface LuaScript {
  readonly src: string;
  readonly sha: string;
  readonly ro?: true;
}

/** A script run by EVALSHA / EVAL. */
export type ReadWriteScript = LuaScript & { readonly ro?: undefined };
/** A script run by EVALSHA_RO / EVAL_RO. */
export type ReadonlyScript = LuaScript & { readonly ro: true };

/** What running a read-write script needs. */
export type ScriptRedis = RedisCommands<'evalsha' | 'eval'>;
/** What running a read-only (`ro`) script needs. */
export type ReadonlyScriptRedis = RedisCommands<'evalshaRo' | 'evalRo'>;

type Args = (string | number)[];

/**
 * The Lua preamble of every script that takes time from Redis: `now` is Redis's clock in ms, so
 * isolates whose clocks disagree still agree on it.
 */
export const LUA_NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * Runs `script` by EVALSHA (EVALSHA_RO for an `ro` script), then once by EVAL (EVAL_RO) if Redis
 * lost it. Rejects with the client's error otherwise.
 */
export function runScript<T = unknown>(redis: ReadonlyScriptRedis, script: ReadonlyScript, keys: string[], args: Args): Promise<T>;
export function runScript<T = unknown>(redis: ScriptRedis, script: ReadWriteScript, keys: string[], args: Args): Promise<T>;
export function runScript<T = unknown>(redis: ScriptRedis & ReadonlyScriptRedis, script: LuaScript, keys: string[], args: Args): Promise<T>;
export function runScript<T>(redis: ScriptRedis | ReadonlyScriptRedis, script: LuaScript, keys: string[], args: Args): Promise<T> {
  // The overloads pair each kind of script with the commands it needs.
  const r = redis as ScriptRedis & ReadonlyScriptRedis;
  const call = script.ro ? r.evalshaRo<Args, T>(script.sha, keys, args) : r.evalsha<Args, T>(script.sha, keys, args);
  return call.catch((err: unknown) => {
    if (!(err instanceof Error && err.message.includes('NOSCRIPT'))) throw err;
    return script.ro ? r.evalRo<Args, T>(script.src, keys, args) : r.eval<Args, T>(script.src, keys, args);
  });
}
