"""The Lua scripts of the Redis room store: each change to a room is one of them, atomic.

Each script's comment says its KEYS and ARGV. They read the time from Redis (``TIME``), so that
expiries do not depend on the clocks of the processes; whatever they announce they PUBLISH in
the same step, already framed by the caller (the broadcast hub's text frame prefix), so that
announcements leave in the order of the changes.
"""

from __future__ import annotations

from coredis.commands.script import Script

__all__ = [
    "ACQUIRE",
    "APPEND",
    "HEARTBEAT",
    "JOIN",
    "LEAVE",
    "PRESENCE",
    "RECOVER",
    "RELEASE",
    "RENEW",
    "TIME",
    "WRITE_STATE",
]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Redis's clock, exact (coredis's TIME -> datetime loses the microseconds' scale).
TIME = Script(script="return redis.call('TIME')")

# KEYS: presence, members. ARGV: id, entry, lifetime ms, key ttl ms, channel, announcement.
JOIN = Script(
    script=_NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""
)

# KEYS: presence, members, departed. ARGV: id, channel, announcement, departed ttl ms.
# The id is remembered as departed for a while, so that a heartbeat sent before the leave but
# run after it (another connection of the pool) does not bring the entry back.
LEAVE = Script(
    script=_NOW
    + """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""
)

# Rooms, one after another. KEYS: per room, presence, members, departed, state, fence, history,
# offsets. ARGV: lifetime ms, key ttl ms, text frame prefix, state ttl ms, then per room: its
# channel, how many entries of ours, and those (id, entry) pairs. For each room: refresh ours
# first (adding back, and announcing, any that expired, unless they left since), then remove and
# announce everyone's expired entries. A room with members here is in use: its state, fencing
# counter and history live on.
HEARTBEAT = Script(
    script=_NOW
    + """
local swept = 0
local a = 5
for r = 0, #KEYS / 7 - 1 do
  local presence, members, departed = KEYS[r * 7 + 1], KEYS[r * 7 + 2], KEYS[r * 7 + 3]
  local channel, count = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  redis.call('ZREMRANGEBYSCORE', departed, '-inf', now)
  if count > 0 then
    for k = 4, 7 do
      redis.call('PEXPIRE', KEYS[r * 7 + k], ARGV[4])
    end
  end
  local back = {}
  for i = a, a + count * 2 - 1, 2 do
    if not redis.call('ZSCORE', departed, ARGV[i]) then
      if redis.call('ZADD', presence, now + tonumber(ARGV[1]), ARGV[i]) == 1 then
        redis.call('HSET', members, ARGV[i], ARGV[i + 1])
        back[#back + 1] = ARGV[i + 1]
      end
    end
  end
  a = a + count * 2
  local expired = redis.call('ZRANGEBYSCORE', presence, '-inf', now)
  for _, id in ipairs(expired) do
    redis.call('ZREM', presence, id)
    redis.call('HDEL', members, id)
  end
  if #expired > 0 then
    redis.call('PUBLISH', channel, ARGV[3] .. cjson.encode({left = expired}))
  end
  if #back > 0 then
    redis.call('PUBLISH', channel, ARGV[3] .. '{"joined":[' .. table.concat(back, ',') .. ']}')
  end
  redis.call('PEXPIRE', presence, ARGV[2])
  redis.call('PEXPIRE', members, ARGV[2])
  swept = swept + #expired
end
return swept
"""
)

# KEYS: presence, members. The live entries' ids, then every stored entry (a flat HGETALL).
PRESENCE = Script(
    script=_NOW
    + """
return {redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf'), redis.call('HGETALL', KEYS[2])}
"""
)

# KEYS: owner, fence. ARGV: process tag, ttl ms, fence ttl ms.
ACQUIRE = Script(
    script="""
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -2 then return {0, pttl} end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local token = fence .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return {1, fence, token}
"""
)

# KEYS: owner, state, fence. ARGV: token, ttl ms, state ttl ms.
RENEW = Script(
    script="""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
"""
)

# KEYS: owner. ARGV: token, channel, announcement.
RELEASE = Script(
    script="""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
)

# A Lua function that stores one message in a room's history: the next offset (a counter
# that starts, for a room with no counter, at Redis's clock in microseconds, above any offset
# the room had before: a client holding an offset from a lost history can never take new
# messages for the ones it missed), the message with "offset" put first in its JSON object,
# XADD with the offset as the entry's id, bounded to MAXLEN entries. Returns the offset and
# the message.
_APPEND = """
local function append(history, offsets, body, maxlen, ttl)
  local n = redis.call('INCR', offsets)
  if n == 1 then
    local t = redis.call('TIME')
    n = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local newest = redis.call('XREVRANGE', history, '+', '-', 'COUNT', 1)
    if #newest > 0 then
      local id = tonumber(string.match(newest[1][1], '^(%d+)'))
      if id >= n then n = id + 1 end
    end
    redis.call('SET', offsets, string.format('%.0f', n))
  end
  local offset = string.format('%.0f', n)
  local message
  if body == '{}' then
    message = '{"offset":"' .. offset .. '"}'
  else
    message = '{"offset":"' .. offset .. '",' .. string.sub(body, 2)
  end
  redis.call('XADD', history, 'MAXLEN', maxlen, offset .. '-0', 'm', message)
  redis.call('PEXPIRE', history, ttl)
  redis.call('PEXPIRE', offsets, ttl)
  return offset, message
end
"""

# KEYS: history, offsets. ARGV: a JSON object's text, max length, state ttl ms, channel, text
# frame prefix. Store and publish one message; return its offset.
APPEND = Script(
    script=_APPEND
    + """
local offset, message = append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. message)
return offset
"""
)

# KEYS: history, offsets. ARGV: the offset after which to read (digits), at most how many.
# {1, message...} if the history holds everything published after the offset (nothing was
# trimmed in between, and the offset is not from the future or another life of the room), else
# {0}. More than "at most how many" (the stream was filled by a process with a longer history:
# a rolling deploy that changes it, or a restart with a shorter one) is {0} too: returning the
# first ones only would lose the rest silently.
RECOVER = Script(
    script="""
local since = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if since == nil or since > last then return {0} end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #oldest == 0 then
  if since == last then return {1} end
  return {0}
end
if since < tonumber(string.match(oldest[1][1], '^(%d+)')) - 1 then return {0} end
local limit = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', limit + 1)
if #entries > limit then return {0} end
local out = {1}
for _, entry in ipairs(entries) do
  out[#out + 1] = entry[2][2]
end
return out
"""
)

# KEYS: state, owner, history, offsets. ARGV: expected version, doc, state ttl ms, lease token
# or '', channel, frame prefix, announcement ('' for none), history max length ('0': the
# announcement is not stored). {1, version, offset or ''} when written; {0 or -1, version,
# doc} when not (a conflict, or fenced out).
WRITE_STATE = Script(
    script=_APPEND
    + """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then
  return {-1, v, redis.call('HGET', KEYS[1], 'doc') or '{}'}
end
if v ~= tonumber(ARGV[1]) then return {0, v, redis.call('HGET', KEYS[1], 'doc') or '{}'} end
redis.call('HSET', KEYS[1], 'v', v + 1, 'doc', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local offset = ''
if ARGV[7] ~= '' then
  local message = ARGV[7]
  if ARGV[8] ~= '0' then
    offset, message = append(KEYS[3], KEYS[4], ARGV[7], ARGV[8], ARGV[3])
  end
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. message)
end
return {1, v + 1, offset}
"""
)
