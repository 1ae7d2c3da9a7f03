-- Pause a token's limiter for the whole fleet after Pisano answered 429.
--
-- KEYS[2] meta (as in acquire.lua; KEYS[1] is passed so both keys share one cluster slot)
-- ARGV[1] pause ms from now (Retry-After, or the caller's backoff when there was none)
-- ARGV[2] ttl ms
-- No slot starts before now + pause; a longer pause already set is kept.
-- Returns the pause end (ms, Redis clock).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local pause_until = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[2], 'pause_until') or '0')
if pause_until > current then
  redis.call('HSET', KEYS[2], 'pause_until', pause_until)
else
  pause_until = current
end
if redis.call('HEXISTS', KEYS[2], 'gen') == 0 then
  -- keep the generation field present: its absence means "state lost" to acquire.lua
  redis.call('HSET', KEYS[2], 'gen', tostring(now))
end
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
return pause_until
