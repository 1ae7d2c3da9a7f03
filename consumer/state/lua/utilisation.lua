-- Read a token's reserved slots with the clock of the Redis that holds them, in one call.
--
-- KEYS[1] log (as in acquire.lua)
-- Returns {seconds, microseconds, slots...}: TIME, then the log's entries (ms, Redis clock).
-- A script, not a pipeline of TIME and LRANGE: on a Redis Cluster a keyless TIME would go to
-- any node (redis-py refuses it in a pipeline), and only the log's own node keeps its clock.
local clock = redis.call('TIME')
local reply = {clock[1], clock[2]}
for _, slot in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  reply[#reply + 1] = slot
end
return reply
