"""Lua scripts of the Redis state store (`redis_store.py`), run with EVALSHA so each slot
change is atomic: counts never go below zero or above `slots`.

Each script touches the keys of one slot key K only (`P{K}:...`, one cluster hash slot); the key
layout is described in `redis_store.py`. Wake-ups go out on the `Pwake` pub/sub channel as
"K\\n<token>", naming the queue head when a slot may be free.
"""

from __future__ import annotations

# KEYS: held, queue, qexp, ticket. ARGV: token, slots, now, lease_exp, wait_exp, join, channel, key
# Returns {1, 0} when the slot is granted, {0, ticket} when queued, {0, 0} when refused.
ACQUIRE_LUA = """
local held, queue, qexp = KEYS[1], KEYS[2], KEYS[3]
local token, limit, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
for _, t in ipairs(redis.call('ZRANGEBYSCORE', qexp, '-inf', now)) do
  redis.call('ZREM', queue, t)
end
redis.call('ZREMRANGEBYSCORE', qexp, '-inf', now)
if redis.call('ZSCORE', held, token) then return {1, 0} end
local n = redis.call('ZCARD', held)
local head = redis.call('ZRANGE', queue, 0, 0)[1]
if n < limit and (head == nil or head == token) then
  redis.call('ZADD', held, ARGV[4], token)
  if head then
    redis.call('ZREM', queue, token); redis.call('ZREM', qexp, token)
    local nxt = redis.call('ZRANGE', queue, 0, 0)[1]
    if nxt and n + 1 < limit then redis.call('PUBLISH', ARGV[7], ARGV[8] .. '\\n' .. nxt) end
  end
  return {1, 0}
end
if ARGV[6] ~= '1' then return {0, 0} end
local ticket = redis.call('ZSCORE', queue, token)
if not ticket then
  ticket = redis.call('INCR', KEYS[4])
  redis.call('ZADD', queue, ticket, token)
end
redis.call('ZADD', qexp, ARGV[5], token)
if n < limit and head and head ~= token then
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. '\\n' .. head)
end
return {0, tonumber(ticket)}
"""

# Release a lease or leave the queue (whichever the token is in); wake the head if it changed.
# KEYS: held, queue, qexp. ARGV: token, now, channel, key. Returns how many entries it removed.
RELEASE_LUA = """
local r = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if r > 0 then
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])) do
    redis.call('ZREM', KEYS[2], t)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if head then redis.call('PUBLISH', ARGV[3], ARGV[4] .. '\\n' .. head) end
end
if KEYS[4] then
  local x = tonumber(ARGV[5])
  local prev = redis.call('GET', KEYS[4])
  if prev then x = tonumber(prev) + tonumber(ARGV[6]) * (x - tonumber(prev)) end
  redis.call('SET', KEYS[4], tostring(x))
end
return r
"""

# KEYS: svc. ARGV: sample, alpha. Returns the new estimate as a string.
EWMA_LUA = """
local x = tonumber(ARGV[1])
local prev = redis.call('GET', KEYS[1])
if prev then x = tonumber(prev) + tonumber(ARGV[2]) * (x - tonumber(prev)) end
redis.call('SET', KEYS[1], tostring(x))
return tostring(x)
"""
