-- Pause a token's limiter for the whole fleet after Pisano answered 429.
--
-- KEYS[2] meta (as in acquire.lua; KEYS[1] is passed so both keys share one cluster slot)
-- ARGV[1] pause ms from now (Retry-After, or the caller's backoff when there was none)
-- ARGV[2] the fleet clock's `now` of the caller's previous reply of acquire.lua ('' none)
-- ARGV[3] the caller's monotonic ms from receiving that reply to sending this call
-- ARGV[4] step tolerance ms (acquire.lua's ARGV[11..13]; absent, as from a caller that sends none:
--         nothing is measured)
-- No slot starts before now + pause; a longer pause already set is kept. The meta hash keeps no
-- TTL (its absence means "state lost" to acquire.lua), and a pause alone does not create an
-- epoch: acquire.lua does.
-- A forward step of Redis's clock is taken out first, as acquire.lua takes it out ('step' there),
-- before `now` is read: a 429 whose pause was the first call after the step (a failover to a node
-- whose clock is ahead) otherwise ended the step's length late once the next call took it out,
-- and the fleet was held for the step (an hour's NTP step: an hour). Measured once: the next
-- caller across the same step reads the corrected clock.
-- Returns {pause end, now} (ms, the fleet's clock: Redis's TIME less meta `skew`, as acquire.lua's):
-- the end of the fleet's pause (this one, or a longer one already set) and the clock it was read
-- at, so that the caller knows how long the fleet stays paused (its retry's wait: attempts.py).
local clock = redis.call('TIME')
local skew = tonumber(redis.call('HGET', KEYS[2], 'skew') or '0') or 0
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - skew
local prev, elapsed, tolerance = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if prev and elapsed and tolerance and now - prev - elapsed > tolerance then
  local stepped = now - prev - elapsed
  skew, now = skew + stepped, now - stepped
  redis.call('HSET', KEYS[2], 'skew', skew)
end
local pause_until = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[2], 'pause_until') or '0')
if pause_until > current then
  redis.call('HSET', KEYS[2], 'pause_until', pause_until)
else
  pause_until = current
end
return {pause_until, now}
