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
    "HEARTBEAT",
    "JOIN",
    "LEAVE",
    "PRESENCE",
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

# Rooms, one after another. KEYS: per room, presence, members, departed, state, fence. ARGV:
# lifetime ms, key ttl ms, text frame prefix, state ttl ms, then per room: its channel, how many
# entries of ours, and those (id, entry) pairs. For each room: refresh ours first (adding back,
# and announcing, any that expired, unless they left since), then remove and announce
# everyone's expired entries. A room with members here is in use: its state and fencing
# counter live on.
HEARTBEAT = Script(
    script=_NOW
    + """
local swept = 0
local a = 5
for r = 0, #KEYS / 5 - 1 do
  local presence, members, departed = KEYS[r * 5 + 1], KEYS[r * 5 + 2], KEYS[r * 5 + 3]
  local channel, count = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  redis.call('ZREMRANGEBYSCORE', departed, '-inf', now)
  if count > 0 then
    redis.call('PEXPIRE', KEYS[r * 5 + 4], ARGV[4])
    redis.call('PEXPIRE', KEYS[r * 5 + 5], ARGV[4])
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

# KEYS: state, owner. ARGV: expected version, doc, state ttl ms, lease token or '', channel,
# announcement or ''.
WRITE_STATE = Script(
    script="""
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then
  return {-1, v, redis.call('HGET', KEYS[1], 'doc') or '{}'}
end
if v ~= tonumber(ARGV[1]) then return {0, v, redis.call('HGET', KEYS[1], 'doc') or '{}'} end
redis.call('HSET', KEYS[1], 'v', v + 1, 'doc', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return {1, v + 1}
"""
)
