/**
 * The exact limiter's Lua (sliding log and fixed window, one or several limits in one script),
 * with its SHA pinned (checked against sha1(src) in the tests).
 */
import { LUA_NOW_MS, type LuaScript } from '../script.ts';

export const SCRIPTS = {
  /**
   * KEYS: one per (limit, identifier). ARGV: nonce, cost, then per key: kind (`log` | `fixed`),
   * limit, window ms. Checks every key before writing any, so a refused call consumes nothing.
   * Reply: allowed, then per key: ok, remaining, ms until reset, limit. Scores are ms (13 digits
   * survive Lua's %.14g number formatting; µs would not).
   */
  limit: {
    src: `local nonce, cost = ARGV[1], tonumber(ARGV[2])
local function spec(i) return ARGV[i * 3], tonumber(ARGV[i * 3 + 1]), tonumber(ARGV[i * 3 + 2]) end
${LUA_NOW_MS}local all, out, used, start = 1, {0}, {}, {}
for i, key in ipairs(KEYS) do
  local kind, limit, window = spec(i)
  local reset
  if kind == 'log' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    used[i] = redis.call('ZCARD', key)
    local k = math.max(used[i] + cost - limit, 1) - 1
    local e = redis.call('ZRANGE', key, k, k, 'WITHSCORES')
    reset = e[2] and tonumber(e[2]) + window - now or window
  else
    start[i] = now - now % window
    local h = redis.call('HMGET', key, 'w', 'n')
    used[i] = tonumber(h[1]) == start[i] and tonumber(h[2]) or 0
    reset = start[i] + window - now
  end
  if used[i] + cost > limit then all = 0 end
  out[#out + 1] = used[i] + cost <= limit and 1 or 0
  out[#out + 1] = math.max(limit - used[i], 0)
  out[#out + 1] = reset
  out[#out + 1] = limit
end
if all == 1 and cost > 0 then
  for i, key in ipairs(KEYS) do
    local kind, _, window = spec(i)
    if kind == 'log' then
      for j = 1, cost do redis.call('ZADD', key, now, nonce .. ':' .. j) end
      redis.call('PEXPIRE', key, window)
    else
      redis.call('HSET', key, 'w', start[i], 'n', used[i] + cost)
      redis.call('PEXPIREAT', key, start[i] + window)
    end
    out[i * 4 - 1] = out[i * 4 - 1] - cost
  end
end
out[1] = all
return out
`,
    sha: 'f913ba5f89a2d8c97dfef1d23b7843843bece31e',
  },
} as const satisfies Record<string, LuaScript>;
