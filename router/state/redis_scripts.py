"""Lua scripts of the Redis state store (`redis_store.py`), run with EVALSHA so each slot
change is atomic: counts never go below zero or above `slots`.

Each script touches the keys of one slot key K only (`P{K}:...`, one cluster hash slot); the key
layout is described in `redis_store.py`. Wake-ups go out on the `Pwake` pub/sub channel as
"K\\n<token>", naming the queue head when a slot may be free, or a waiter told to leave.

Queue scores are `priority * PRIORITY_STRIDE + ticket`: private waiters sort ahead of standard
ones, FIFO within a class. On every arrival and release `REEVALUATE` runs the rule of
`queue_model.py` (same numbers) and moves the spillable waiters that can no longer make their
bound from the queue to `P{K}:spilled`, where their next try finds them.
"""

from __future__ import annotations

PRIORITY_STRIDE = 10**13

# Shared functions. purge: drop expired leases, queue entries and spill notes.
# reevaluate: list-schedule the queue onto the slots; spill the late spillable waiters.
_COMMON = """
local function purge(held, queue, qexp, hinfo, qinfo, spilled, now)
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', held, '-inf', now)) do
    redis.call('HDEL', hinfo, t)
  end
  redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', qexp, '-inf', now)) do
    redis.call('ZREM', queue, t); redis.call('HDEL', qinfo, t)
  end
  redis.call('ZREMRANGEBYSCORE', qexp, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', spilled, '-inf', now)
end
local function insert_sorted(list, x)
  local i = #list + 1
  while i > 1 and list[i - 1] > x do list[i] = list[i - 1]; i = i - 1 end
  list[i] = x
end
local function reevaluate(held, queue, qexp, hinfo, qinfo, spilled, svc, now, limit,
                          channel, key, spill_exp)
  if limit == nil or limit <= 0 then return end
  local q = redis.call('ZRANGE', queue, 0, -1)
  if #q == 0 then return end
  local default_s = tonumber(redis.call('GET', svc) or '') or 2.0
  local frees = {}
  for _, t in ipairs(redis.call('ZRANGE', held, 0, -1)) do
    local info = redis.call('HGET', hinfo, t)
    local start, pred = now, default_s
    if info then
      local a, b = string.match(info, '^([^|]*)|([^|]*)$')
      start = tonumber(a) or now
      pred = tonumber(b) or default_s
    end
    insert_sorted(frees, math.max(start + pred, now + 0.2 * pred))
  end
  while #frees > limit do table.remove(frees) end
  while #frees < limit do table.insert(frees, 1, now) end
  for _, t in ipairs(q) do
    local info = redis.call('HGET', qinfo, t) or ''
    local a, b, c = string.match(info, '^([^|]*)|([^|]*)|([^|]*)$')
    local pred, deadline = tonumber(a or ''), tonumber(b or '')
    local first = frees[1]
    if c == '1' and pred and deadline and first > deadline then
      redis.call('ZREM', queue, t); redis.call('ZREM', qexp, t); redis.call('HDEL', qinfo, t)
      redis.call('ZADD', spilled, spill_exp, t)
      redis.call('PUBLISH', channel, key .. '\\n' .. t)
    else
      table.remove(frees, 1)
      insert_sorted(frees, first + (pred or default_s))
    end
  end
end
"""

# KEYS: held, queue, qexp, ticket, hinfo, qinfo, spilled, svc, limit.
# ARGV: token, slots, now, lease_exp, wait_exp, join, channel, key, priority, predicted ('' if
# unknown), deadline, spillable ('1'/'0'), spill_exp.
# Returns {1, 0} when granted, {0, score} when queued, {0, 0} when refused, {2, 0} when told
# to leave (spilled).
ACQUIRE_LUA = _COMMON + """
local held, queue, qexp, hinfo, qinfo, spilled = KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6],
  KEYS[7]
local token, limit, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
purge(held, queue, qexp, hinfo, qinfo, spilled, ARGV[3])
redis.call('SET', KEYS[9], ARGV[2])
if redis.call('ZSCORE', spilled, token) then
  redis.call('ZREM', spilled, token); return {2, 0}
end
if redis.call('ZSCORE', held, token) then return {1, 0} end
local n = redis.call('ZCARD', held)
local head = redis.call('ZRANGE', queue, 0, 0)[1]
if n < limit and (head == nil or head == token) then
  redis.call('ZADD', held, ARGV[4], token)
  redis.call('HSET', hinfo, token, ARGV[3] .. '|' .. ARGV[10])
  if head then
    redis.call('ZREM', queue, token); redis.call('ZREM', qexp, token)
    redis.call('HDEL', qinfo, token)
    local nxt = redis.call('ZRANGE', queue, 0, 0)[1]
    if nxt and n + 1 < limit then redis.call('PUBLISH', ARGV[7], ARGV[8] .. '\\n' .. nxt) end
  end
  return {1, 0}
end
if ARGV[6] ~= '1' then return {0, 0} end
local ticket = redis.call('ZSCORE', queue, token)
if not ticket then
  ticket = tonumber(ARGV[9]) * """ + str(PRIORITY_STRIDE) + """ + redis.call('INCR', KEYS[4])
  redis.call('ZADD', queue, ticket, token)
  redis.call('HSET', qinfo, token, ARGV[10] .. '|' .. ARGV[11] .. '|' .. ARGV[12])
  reevaluate(held, queue, qexp, hinfo, qinfo, spilled, KEYS[8], now, limit, ARGV[7], ARGV[8],
             ARGV[13])
  if redis.call('ZSCORE', spilled, token) then
    redis.call('ZREM', spilled, token); return {2, 0}
  end
  head = redis.call('ZRANGE', queue, 0, 0)[1]
end
redis.call('ZADD', qexp, ARGV[5], token)
if n < limit and head and head ~= token then
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. '\\n' .. head)
end
return {0, tonumber(ticket)}
"""

# Release a lease or leave the queue (whichever the token is in); wake the head if it changed;
# re-evaluate the queue; fold a service-time sample into the EWMA and the sample window.
# KEYS: held, queue, qexp, hinfo, qinfo, spilled, svc, limit, samples, sver (samples pushed).
# ARGV: token, now, channel, key, spill_exp, sample ('' if none), alpha, record, window.
# Returns how many entries it removed.
RELEASE_LUA = _COMMON + """
local held, queue, qexp, hinfo, qinfo, spilled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local token = ARGV[1]
local r = redis.call('ZREM', held, token) + redis.call('ZREM', queue, token)
redis.call('ZREM', qexp, token); redis.call('ZREM', spilled, token)
redis.call('HDEL', hinfo, token); redis.call('HDEL', qinfo, token)
if ARGV[6] ~= '' then
  local x = tonumber(ARGV[6])
  local prev = redis.call('GET', KEYS[7])
  if prev then x = tonumber(prev) + tonumber(ARGV[7]) * (x - tonumber(prev)) end
  redis.call('SET', KEYS[7], tostring(x))
  redis.call('LPUSH', KEYS[9], ARGV[8])
  redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[9]) - 1)
  redis.call('INCR', KEYS[10])
end
if r > 0 then
  purge(held, queue, qexp, hinfo, qinfo, spilled, ARGV[2])
  local head = redis.call('ZRANGE', queue, 0, 0)[1]
  if head then redis.call('PUBLISH', ARGV[3], ARGV[4] .. '\\n' .. head) end
  reevaluate(held, queue, qexp, hinfo, qinfo, spilled, KEYS[7], tonumber(ARGV[2]),
             tonumber(redis.call('GET', KEYS[8]) or ''), ARGV[3], ARGV[4], ARGV[5])
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

# The claim of `snapshot(..., claim=)`: take a slot on the first of the given slot keys that has
# one free and nobody queued — the immediate grant of ACQUIRE, never a queue entry. Several slot
# keys in one call: one Redis (not a cluster; the store's client is a plain one).
# KEYS: per slot key, in the order to try: held, queue, qexp, hinfo, qinfo, spilled, limit.
# ARGV: token, now, lease_exp, then the slots of each key.
# Returns the 1-based position of the key it took a slot on, or 0.
CLAIM_KEYS_PER_SLOT = 7
CLAIM_LUA = _COMMON + """
local token, now, exp = ARGV[1], ARGV[2], ARGV[3]
for i = 1, #KEYS / """ + str(CLAIM_KEYS_PER_SLOT) + """ do
  local b = (i - 1) * """ + str(CLAIM_KEYS_PER_SLOT) + """
  local held, queue, hinfo = KEYS[b + 1], KEYS[b + 2], KEYS[b + 4]
  purge(held, queue, KEYS[b + 3], hinfo, KEYS[b + 5], KEYS[b + 6], now)
  redis.call('SET', KEYS[b + 7], ARGV[3 + i])
  if redis.call('ZCARD', held) < tonumber(ARGV[3 + i]) and redis.call('ZCARD', queue) == 0 then
    redis.call('ZADD', held, exp, token)
    redis.call('HSET', hinfo, token, now .. '|')
    return i
  end
end
return 0
"""

# Set the predicted service time of a lease still held (a claim's, once the plan knows it).
# KEYS: hinfo. ARGV: token, predicted ('' if unknown). Returns 1 when the lease was there.
PREDICT_LUA = """
local info = redis.call('HGET', KEYS[1], ARGV[1])
if not info then return 0 end
local start = string.match(info, '^([^|]*)|') or info
redis.call('HSET', KEYS[1], ARGV[1], start .. '|' .. ARGV[2])
return 1
"""

# The snapshot's read of one slot key, compact (one reply of a few strings, not a list per
# lease, waiter and sample to parse): the live leases as "start|predicted" joined by ';', the
# waiters as "score|predicted|deadline|spillable" joined by ';', and the sample window as a
# delta: the store keeps the window it read last with its version (`P{K}:sver`, samples pushed
# so far) and gets only the newer ones (the whole window after a reset or a window behind).
# KEYS: held, qexp, svc, hinfo, queue, qinfo, samples, sver. ARGV: now, version read last (-1:
# none), window. Returns {held, queued, svc or '', running, waiting, version, whole (1/0),
# samples joined by ';', newest first}.
SLOT_SNAPSHOT_LUA = """
local live = '(' .. ARGV[1]
local tokens = redis.call('ZRANGEBYSCORE', KEYS[1], live, '+inf')
local running = {}
for i, t in ipairs(tokens) do running[i] = redis.call('HGET', KEYS[4], t) or '' end
local q = redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES')
local waiting = {}
for i = 1, #q, 2 do
  local info = redis.call('HGET', KEYS[6], q[i])
  if info then waiting[#waiting + 1] = q[i + 1] .. '|' .. info end
end
local v = tonumber(redis.call('GET', KEYS[8]) or '0')
local seen, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local whole, entries = 0, {}
if seen < 0 or v < seen or v - seen >= window then
  whole, entries = 1, redis.call('LRANGE', KEYS[7], 0, -1)
elseif v > seen then
  entries = redis.call('LRANGE', KEYS[7], 0, v - seen - 1)
end
return {#tokens, redis.call('ZCOUNT', KEYS[2], live, '+inf'), redis.call('GET', KEYS[3]) or '',
        table.concat(running, ';'), table.concat(waiting, ';'), v, whole,
        table.concat(entries, ';')}
"""
