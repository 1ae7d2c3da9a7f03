-- The raw state of one id (for `check`, tests and SREs): its value in the newest slice holding it.
--
-- KEYS[1]  the id's bucket tag (layout: lua/claim.lua); KEYS[2] on a Redis Cluster: its guard, never
--          read (consumer/state/dedup_layout.py, `reshard_guard`)
-- ARGV[1]  horizon ms, ARGV[2] slice ms, ARGV[3] the id's field
-- Returns the value ("d", "u|<attempt>", "c|<owner>|<nonce>|<ms>", or a replay's claim over an
-- unknown mark "c|<owner>|<nonce>|u|<attempt>|<ms>") or nil. 0.2.0's key is read by the caller.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local horizon, slice = tonumber(ARGV[1]), tonumber(ARGV[2])
local current = math.floor(now / slice)
for s = current + 1, math.floor((now - horizon) / slice), -1 do
  local value = redis.call('HGET', KEYS[1] .. ':' .. s, ARGV[3])
  if value then return value end
end
return nil
