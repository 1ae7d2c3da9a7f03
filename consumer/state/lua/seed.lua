-- Put a replica's own recent slots back after the limiter state was lost (Redis restarted
-- without its data), so the fleet does not spend again a budget Pisano already counted.
--
-- KEYS[1] log, KEYS[2] meta (as in acquire.lua)
-- ARGV[1] the generation the caller learned from acquire.lua
-- ARGV[2] how many newest entries to keep (the largest limit)
-- ARGV[3] ttl ms
-- ARGV[4] the highest `seq` the caller was given: the state counts at least that many again
-- ARGV[5..] the caller's slot times (ms) within the longest period
--
-- Entries already present are not added twice (a spurious reset must not double-count).
-- Returns the log's new length, or -1 when the generation changed again (ask again).
if redis.call('HGET', KEYS[2], 'gen') ~= ARGV[1] then
  return -1
end
local present = {}
local all = {}
for _, value in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local t = tonumber(value)
  present[t] = (present[t] or 0) + 1
  table.insert(all, t)
end
for i = 5, #ARGV do
  local t = tonumber(ARGV[i])
  if (present[t] or 0) > 0 then
    present[t] = present[t] - 1
  else
    table.insert(all, t)
  end
end
table.sort(all)
local keep = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
local first = math.max(1, #all - keep + 1)
for i = first, #all do
  redis.call('RPUSH', KEYS[1], all[i])
end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if tonumber(ARGV[4]) > seq then
  redis.call('HSET', KEYS[2], 'seq', ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return #all - first + 1
