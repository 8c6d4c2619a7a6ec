/**
 * The Lua of src/lib/writebehind.ts, one script per operation (each atomic), with pinned SHAs.
 *
 * State, chosen so that any subset of it may be lost (eviction, a restart, FLUSHDB) without a reader
 * ever counting an entry twice or falling below the store:
 * - `<stream>`: the queue. Its consumer group's PEL is the ONE record of what is in flight
 *   (delivered, not acked): it lives inside the stream key, so it is lost with the entries it
 *   describes and never apart from them. Acked entries are deleted (XACK + XDEL), so the stream
 *   holds exactly the backlog and `maxLen` caps the backlog itself.
 * - `<stream>:tally`: hash field → entries not acked yet, and `_e`, the id of the first entry this
 *   tally counted. An entry counts iff it has a tally field and its id is ≥ `_e`: entries enqueued
 *   before a lost tally was recreated are not in it, so their ack takes nothing off the new one. A
 *   tally whose stream is gone is dropped by the next script that meets it (its entries are lost).
 * - `<stream>:seq`: the last batch's sequence, `max(seq + 1, Redis time in µs)`: strictly
 *   increasing while the key lives, and above every earlier batch's after it was lost (as long as
 *   Redis's clock does not step back past the loss). A reader that finds it missing takes Redis time.
 * - `<stream>:dlq`: dead letters.
 *
 * Sequences travel as decimal strings: cjson prints numbers with 14 significant digits, µs need 16.
 */
import type { LuaScript } from './script.ts';

// Every script opens with this: KEYS[1] is the stream and KEYS[2] the tally in all of them, and the
// shared helpers below use both.
const HELPERS = `local stream, tally = KEYS[1], KEYS[2]
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function field(flat)
  for i = 1, #flat, 2 do if flat[i] == '_t' then return flat[i + 1] end end
  return nil
end
local function counted(id, flat, from)
  local f = field(flat)
  if f and from and not before(id, from) then return f end
  return nil
end
-- Redis time in µs: the floor of every batch sequence.
local function nowUs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function untally(id, flat)
  local f = counted(id, flat, redis.call('HGET', tally, '_e'))
  if f and redis.call('HINCRBY', tally, f, -1) <= 0 then redis.call('HDEL', tally, f) end
end
`;

export const SCRIPTS = {
  // KEYS: stream, tally. ARGV: maxLen, tally field ('' none), field/value pairs. Returns the id.
  enqueue: {
    src: `${HELPERS}local maxLen, field = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', stream) == 0 then redis.call('DEL', tally) end
local args = {stream, '*'}
if field ~= '' then args[#args + 1] = '_t'; args[#args + 1] = field end
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call('XADD', unpack(args))
if field ~= '' then
  if redis.call('HEXISTS', tally, '_e') == 0 then
    redis.call('DEL', tally)
    redis.call('HSET', tally, '_e', id)
  end
  redis.call('HINCRBY', tally, field, 1)
end
local over = redis.call('XLEN', stream) - maxLen
if over > 0 then
  for _, e in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', over)) do
    untally(e[1], e[2])
    redis.call('XDEL', stream, e[1])
  end
end
return id`,
    sha: '95c6a8dd139fa2d2501adc0b222352de3efb53c7',
  },
  // KEYS: stream, tally, dlq, seq. ARGV: group, consumer, count, min idle ms, max deliveries, dlq maxLen.
  // Creates the group if missing; reclaims idle entries (dead-lettering those delivered too often),
  // tops the batch up with new ones and numbers it. Returns JSON {seq, batch: [[id, flat fields,
  // deliveries]], dead: [ids]}.
  claim: {
    src: `${HELPERS}local dlq, seqKey = KEYS[3], KEYS[4]
local group, consumer, count, minIdle, maxDel, dlqMaxLen = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), ARGV[6]
if redis.call('EXISTS', stream) == 0 then redis.call('DEL', tally) end
local made = redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
if type(made) == 'table' and made.err and not string.find(made.err, 'BUSYGROUP', 1, true) then return redis.error_reply(made.err) end
local batch, dead = {}, {}
local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, minIdle, '0-0', 'COUNT', count)
for _, e in ipairs(claimed[2]) do
  if type(e) == 'table' then
    local id = e[1]
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    local n = (p[1] and tonumber(p[1][4])) or 1
    if n > maxDel then
      local args = {dlq, 'MAXLEN', '~', dlqMaxLen, '*', '_id', id, '_deliveries', n}
      for _, v in ipairs(e[2]) do args[#args + 1] = v end
      redis.call('XADD', unpack(args))
      untally(id, e[2])
      redis.call('XACK', stream, group, id)
      redis.call('XDEL', stream, id)
      dead[#dead + 1] = id
    else
      batch[#batch + 1] = {id, e[2], n}
    end
  end
end
if #batch < count then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #batch, 'STREAMS', stream, '>')
  if r then for _, e in ipairs(r[1][2]) do batch[#batch + 1] = {e[1], e[2], 1} end end
end
local seq = '0'
if #batch > 0 then
  local n = math.max((tonumber(redis.call('GET', seqKey)) or 0) + 1, nowUs())
  seq = string.format('%d', n)
  redis.call('SET', seqKey, seq)
end
return cjson.encode({seq, batch, dead})`,
    sha: 'a7dbef315267be0607e455dab58f51dde6746e9c',
  },
  // KEYS: stream, tally. ARGV: group, ids. Retires each entry this call acks (an entry another drain
  // acked first is left alone): out of the tally, out of the stream. Returns how many were acked.
  ack: {
    src: `${HELPERS}local group = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local e = redis.call('XRANGE', stream, id, id)[1]
  if redis.call('XACK', stream, group, id) == 1 then
    n = n + 1
    if e then
      untally(e[1], e[2])
      redis.call('XDEL', stream, id)
    end
  end
end
return n`,
    sha: '7b0946720469691364e75a5b6a6ca09be6f20538',
  },
  // KEYS: stream, tally, seq. ARGV: tally fields. Returns JSON {seq, [[count, [in-flight ids]] per
  // field]}: what the tally counts, and which of those entries are in flight (in a group's PEL).
  snapshot: {
    src: `${HELPERS}local seqKey = KEYS[3]
local want, out = {}, {}
for i = 1, #ARGV do want[ARGV[i]] = i; out[i] = {0, {}} end
local seq = redis.call('GET', seqKey)
if not seq then seq = string.format('%d', nowUs()) end
local from = redis.call('EXISTS', stream) == 1 and redis.call('HGET', tally, '_e')
if from then
  for i = 1, #ARGV do out[i][1] = tonumber(redis.call('HGET', tally, ARGV[i]) or '0') end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, pending
    for j = 1, #g, 2 do
      if g[j] == 'name' then name = g[j + 1] elseif g[j] == 'pending' then pending = g[j + 1] end
    end
    local start = '-'
    while pending and pending > 0 do
      local page = redis.call('XPENDING', stream, name, start, '+', 1000)
      for _, p in ipairs(page) do
        local e = redis.call('XRANGE', stream, p[1], p[1])[1]
        local f = e and counted(e[1], e[2], from)
        if f and want[f] then table.insert(out[want[f]][2], e[1]) end
      end
      if #page < 1000 then break end
      start = '(' .. page[#page][1]
    end
  end
end
return cjson.encode({seq, out})`,
    sha: 'ed3cfffdc009c5a6f6ad9fd3348845f640d5791e',
    ro: true,
  },
} as const satisfies Record<string, LuaScript>;
