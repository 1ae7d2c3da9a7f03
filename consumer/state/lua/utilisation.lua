-- Count a token's reserved slots per window with the clock of the Redis that holds them, in one call.
--
-- KEYS[1] log (as in acquire.lua: ascending slot times, ms, the fleet's clock)
-- KEYS[2] meta (as in acquire.lua), optional: its `skew` is taken from TIME to read the fleet's clock
-- ARGV    the windows' periods (ms)
-- Returns {seconds, microseconds, count...}: TIME, then per period the slots s with
-- now - period < s <= now. Counted by binary search over the sorted log (a few LINDEX per window),
-- not by returning the log: with N up to 1,000,000 that blocked Redis for most of a second.
-- A script, not a pipeline: on a Redis Cluster a keyless TIME would go to any node (redis-py
-- refuses it in a pipeline), and only the log's own node keeps its clock.
local clock = redis.call('TIME')
local skew = 0
if KEYS[2] then skew = tonumber(redis.call('HGET', KEYS[2], 'skew') or '0') or 0 end
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - skew
local length = redis.call('LLEN', KEYS[1])

-- How many entries are at or before t (the index of the first one after it).
local function at_or_before(t)
  local lo, hi = 0, length
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if (tonumber(redis.call('LINDEX', KEYS[1], mid)) or 0) <= t then lo = mid + 1 else hi = mid end
  end
  return lo
end

local reply = {clock[1], clock[2]}
local upto = at_or_before(now)
for i = 1, #ARGV do
  reply[#reply + 1] = upto - at_or_before(now - tonumber(ARGV[i]))
end
return reply
