/**
 * The sessions' Lua, each with its SHA1 (pinned in the tests).
 *
 * A user's index (`user-sess:<uid>`, a sorted set of session handles) is the authority on which of
 * the user's sessions live: a session bound to a user is valid only while that index lists it. So
 * "log out everywhere" (which empties the index) cannot miss a session, and a lost index logs the
 * user out rather than leaving sessions nothing can find. The load and the save read the index by
 * a name built from the session's stored `_uid` (`indexPrefix .. uid`), in the same script, so the
 * check costs no round trip. Redis Cluster refuses a key of another slot inside a script: there
 * `redis.pcall` answers an error table and the check is skipped (the index alone, as before).
 */
import { LUA_NOW_MS, type LuaScript } from '../script.ts';

/** Sets `listed` false when the session `sess` is bound to a user whose index does not list `handle`. */
const LISTED = `local uid = redis.call('HGET', sess, '_uid')
local listed = true
if uid then listed = redis.pcall('ZSCORE', indexPrefix .. uid, handle) ~= false end
`;

export const SCRIPTS = {
  /**
   * KEYS: session. ARGV: index prefix, handle. `PTTL` + Redis time + `HGETALL` in one read-only call,
   * as cjson (which keeps the values away from the client's JSON guessing); a session its user's
   * index does not list reads as gone (`PTTL` -2, no fields).
   */
  load: {
    src: `local sess = KEYS[1]
local indexPrefix, handle = ARGV[1], ARGV[2]
${LUA_NOW_MS}${LISTED}if not listed then return cjson.encode({-2, now, {}}) end
return cjson.encode({redis.call('PTTL', sess), now, redis.call('HGETALL', sess)})`,
    sha: '2b96b679055d41af30723cbe9bd097a4a9e9d5ec',
    ro: true,
  },
  /**
   * KEYS: session. ARGV: mode ('c' create: must not exist; 'u' update: must exist and be listed by
   * its user's index, so a revoked session is never resurrected), idleMs, absoluteMs, index prefix,
   * handle, n, n field/value pairs to set, then fields to delete.
   * Returns {ttl, now}, or 0 when the session is gone, unlisted or past its absolute lifetime.
   */
  save: {
    src: `local sess = KEYS[1]
local mode, idleMs, absoluteMs, indexPrefix, handle, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
${LUA_NOW_MS}if redis.call('EXISTS', sess) == 1 then
  if mode == 'c' then return 0 end
  ${LISTED.trimEnd().replace(/\n/g, '\n  ')}
  if not listed then redis.call('DEL', sess) return 0 end
elseif mode == 'u' then return 0
else redis.call('HSET', sess, '_created', now) end
local created = tonumber(redis.call('HGET', sess, '_created')) or now
local ttl = math.min(idleMs, created + absoluteMs - now)
if ttl <= 0 then redis.call('DEL', sess) return 0 end
local last = 6 + 2 * n
for i = 7, last, 2 do redis.call('HSET', sess, ARGV[i], ARGV[i + 1]) end
for i = last + 1, #ARGV do redis.call('HDEL', sess, ARGV[i]) end
redis.call('HSET', sess, '_seen', now)
redis.call('PEXPIRE', sess, ttl)
return {ttl, now}`,
    sha: 'ba2627b97e90c4191551754dc9d4f90d044e3b57',
  },
  /** KEYS: session. ARGV: user id. Deletes the session only if it belongs to that user: a handle from one user's list cannot end another's session. */
  revoke: {
    src: `local sess, owner = KEYS[1], ARGV[1]
if redis.call('HGET', sess, '_uid') == owner then return redis.call('DEL', sess) end
return 0`,
    sha: 'efdf33916f1d9eb84207b084f09e3f19686a8279',
  },
} as const satisfies Record<string, LuaScript>;
