-- Reserve the earliest request slot that keeps every throttle window within its limit.
--
-- KEYS[1]  log: the reserved slot times (ms, Redis clock), ascending, newest last
-- KEYS[2]  meta: hash with `gen` (generation of this state), `seq` (reservations so far) and
--          `pause_until` (ms, after a 429)
-- ARGV[1]  the caller's generation, '' when it has none yet
-- ARGV[2]  margin ms added to every period: requests leave a little after their slot, not at it
-- ARGV[3]  horizon ms: a slot further away is refused (nothing reserved) with its wait
-- ARGV[4]  the highest `seq` the caller was given, 0 if none
-- ARGV[5..] limit, period-ms pairs, one pair per window
--
-- Returns {status, wait_ms, gen, slot_ms, seq}: status 1 granted, 0 refused beyond the horizon,
-- -1 the state was lost since the caller's generation (Redis restarted or flushed), or rolled
-- back behind a reservation the caller was given (an older snapshot restored, a failover that
-- lost writes): the caller seeds its own recent slots (seed.lua) and asks again.
--
-- Slots are handed out first come, first served and never before an existing reservation, so
-- the log stays sorted and only the newest `limit` entries matter to each window: a new slot at
-- t is allowed by window (N, T) when the N-th newest entry is at or before t - T - margin.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local gen = redis.call('HGET', KEYS[2], 'gen')
if not gen then
  gen = tostring(now)
  redis.call('HSET', KEYS[2], 'gen', gen)
  if ARGV[1] ~= '' then
    return {-1, 0, gen, 0, 0}
  end
elseif ARGV[1] ~= '' and ARGV[1] ~= gen then
  return {-1, 0, gen, 0, 0}
end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if tonumber(ARGV[4]) > seq then
  return {-1, 0, gen, 0, seq}
end

local margin, horizon = tonumber(ARGV[2]), tonumber(ARGV[3])
local slot = now
local pause_until = tonumber(redis.call('HGET', KEYS[2], 'pause_until') or '0')
if pause_until > slot then slot = pause_until end
local length = redis.call('LLEN', KEYS[1])
if length > 0 then
  local newest = tonumber(redis.call('LINDEX', KEYS[1], -1))
  if newest > slot then slot = newest end
end
local keep, longest = 1, 0
for i = 5, #ARGV, 2 do
  local limit, period = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if length >= limit then
    local nth = tonumber(redis.call('LINDEX', KEYS[1], -limit))
    if nth + period + margin > slot then slot = nth + period + margin end
  end
  if limit > keep then keep = limit end
  if period > longest then longest = period end
end

local wait = slot - now
if wait > horizon then
  return {0, wait, gen, slot, seq}
end
redis.call('RPUSH', KEYS[1], slot)
redis.call('LTRIM', KEYS[1], -keep, -1)
-- An entry matters for one longest period after its slot; slots are at most `horizon` ahead.
local ttl = longest + margin + horizon + 60000
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
return {1, wait, gen, slot, seq}
