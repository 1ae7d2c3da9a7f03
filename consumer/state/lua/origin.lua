-- A bucket's origin (consumer/state/origins.py): its `since` as it is, or a new one written when
-- there is none (first use, or the bucket's keys were lost); and its check count, one more.
--
-- KEYS[1]  the bucket's origin hash, `<bucket tag>:origin` (in the bucket's slot)
-- ARGV[1]  a random part, new for each call
-- ARGV[2]  for a dedup bucket, the layout's copy for the field '#' that every slice hash carries
--          (consumer/state/dedup_layout.py reads one back when the layout key is lost); '' else
-- Returns {since, checks}: `since` is "<Redis time, ms>-<random part>"; `checks` counts the checks
-- of every replica, so Redis gone back to an earlier state (a restart from its last snapshot, a
-- restore from a backup) shows as a count below one this replica read before. Never expires: it
-- lives as long as the keys beside it, and goes with them.
local since = redis.call('HGET', KEYS[1], 'since')
if not since then
  local now = redis.call('TIME')
  since = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000)) .. '-' .. ARGV[1]
  if ARGV[2] ~= '' then
    redis.call('HSET', KEYS[1], 'since', since, '#', ARGV[2])
  else
    redis.call('HSET', KEYS[1], 'since', since)
  end
end
return {since, redis.call('HINCRBY', KEYS[1], 'checks', 1)}
