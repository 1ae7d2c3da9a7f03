-- Pause a token's limiter for the whole fleet after Pisano answered 429.
--
-- KEYS[2] meta (as in acquire.lua; KEYS[1] is passed so both keys share one cluster slot)
-- ARGV[1] pause ms from now (Retry-After, or the caller's backoff when there was none)
-- No slot starts before now + pause; a longer pause already set is kept. The meta hash keeps no
-- TTL (its absence means "state lost" to acquire.lua), and a pause alone does not create an
-- epoch: acquire.lua does.
-- Returns the pause end (ms, the fleet's clock: Redis's TIME less meta `skew`, as acquire.lua's).
local clock = redis.call('TIME')
local skew = tonumber(redis.call('HGET', KEYS[2], 'skew') or '0') or 0
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - skew
local pause_until = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[2], 'pause_until') or '0')
if pause_until > current then
  redis.call('HSET', KEYS[2], 'pause_until', pause_until)
else
  pause_until = current
end
return pause_until
