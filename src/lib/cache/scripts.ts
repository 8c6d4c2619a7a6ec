/**
 * The cache's Lua, with pinned SHAs (checked against sha1(src) and SCRIPT LOAD in the tests), so the
 * read is an EVALSHA issued synchronously, in the same tick as the tag reads: hashing at run time
 * is async and would miss the auto-pipeline batch.
 *
 * The entry (./envelope.ts) is written whole by `write` and only its header is read here: the
 * script matches `{"c":<createdAt>,"f":<freshUntil>,` at the start, which `write` always puts first,
 * so Lua never decodes the value itself (a page of products can be large).
 */
import { LUA_NOW_MS, type LuaScript } from '../script.ts';

export const SCRIPTS = {
  /**
   * Reads the entry and takes the single-flight lock when the entry is missing, not fresh, or the
   * one the caller found unusable; `!` is an invalidation tombstone, free to take.
   * Returns {raw, now, got (1 taken, 0 held elsewhere, -1 not tried), createdAt ('-' none)}.
   */
  read: {
    src: `local entry, lock = KEYS[1], KEYS[2]
local tryLock, token, leaseMs, unusable = ARGV[1] == '1', ARGV[2], ARGV[3], ARGV[4]
${LUA_NOW_MS}local raw = redis.call('GET', entry)
local created, fresh = '-', 0
if raw then
  local c, f = string.match(raw, '^{"c":(%d+),"f":(%d+),')
  if c then created, fresh = c, tonumber(f) end
end
local got = -1
if tryLock and (fresh <= now or created == unusable) then
  local holder = redis.call('GET', lock)
  if holder and holder ~= '!' then got = 0 else
    redis.call('SET', lock, token, 'PX', leaseMs)
    got = 1
  end
end
return {raw or false, now, got, created}`,
    sha: '8c897fd0cd948cf7ad0ee83c8fd00afc2a8a91bf',
  },
  /**
   * Writes an entry, built here whole: `{"c":now,"f":now+ttl,"s":now+ttl+stale,` + `body` (the JS
   * side's `"v":…,"t":…}`), expiring at the end of the stale window.
   * - `load` writes only while our token holds the lock (a tombstone, another token or no lock: an
   *   invalidation may have landed during the load), then frees it;
   * - `set` writes (compare-and-set when `expect` is given: '-' = absent) and leaves a tombstone so
   *   loads already running cannot overwrite it;
   * - `drop` frees our lock.
   * Returns 1 written, 0 not.
   */
  write: {
    src: `local entry, lock = KEYS[1], KEYS[2]
local mode, token, expect, ttl, stale, body, leaseMs = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local holder = redis.call('GET', lock)
if mode == 'drop' then
  if holder == token then redis.call('DEL', lock) end
  return 0
end
if mode == 'load' then
  if holder ~= token then return 0 end
elseif expect ~= '' then
  local current = redis.call('GET', entry)
  local created = current and string.match(current, '^{"c":(%d+),') or '-'
  if created ~= expect then return 0 end
end
${LUA_NOW_MS}redis.call('SET', entry, string.format('{"c":%d,"f":%d,"s":%d,', now, now + ttl, now + ttl + stale) .. body, 'PX', string.format('%d', ttl + stale))
if mode == 'load' then
  redis.call('DEL', lock)
else
  redis.call('SET', lock, '!', 'PX', leaseMs)
end
return 1`,
    sha: 'cbe38bb7a8ebf5ba665065b9cf9a803bb2ff8598',
  },
} as const satisfies Record<string, LuaScript>;
