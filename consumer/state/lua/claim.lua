-- Claim the event ids of one request, atomically, in one round trip.
--
-- KEYS[i]  the dedup key of the i-th event
-- ARGV[1]  claim tag: "<owner>|<attempt nonce>"; running the same call again (a retry after a
--          lost reply) finds its own claims and answers C again instead of H
-- ARGV[2]  lease ms: a claim older than this was left by a replica that died or stalled between
--          claiming and marking, so the event may or may not have reached Pisano
-- ARGV[3]  horizon ms: how long any state is kept (DEDUP_HORIZON_S)
-- ARGV[4]  one char per key, '1' when that record is an SRE replay: a replay may send an event
--          whose fate was unknown (the SRE checked), never one that was delivered
--
-- Values: "d" delivered, "u" fate unknown, "c|<owner>|<nonce>|<claimed at ms>" claimed.
-- Returns one char per key: C claimed for the caller, D already delivered (skip it),
-- H claimed by a live attempt elsewhere (hold it back), U fate unknown (dead-letter: ambiguous).
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local tag, lease, horizon, replays = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local mine = 'c|' .. tag .. '|'
local claim = mine .. now
local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  local state
  if not value then
    state = 'C'
  elseif value == 'd' then
    state = 'D'
  elseif string.sub(value, 1, #mine) == mine then
    state = 'C'
  elseif value == 'u' then
    state = (string.sub(replays, i, i) == '1') and 'C' or 'U'
  else
    local claimed_at = tonumber(string.match(value, '|(%d+)$')) or 0
    if now - claimed_at < lease then
      state = 'H'
    else
      state = (string.sub(replays, i, i) == '1') and 'C' or 'U'
    end
  end
  if state == 'C' then
    redis.call('SET', key, claim, 'PX', horizon)
  end
  out[i] = state
end
return table.concat(out)
