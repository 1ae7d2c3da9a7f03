-- Record the outcome of one request for its event ids.
--
-- KEYS[i]  the dedup key of the i-th event
-- ARGV[1]  outcome: "d" delivered (Pisano answered 200), "u" fate unknown (ambiguous), or
--          "r" release (the request certainly failed: the event may be sent again)
-- ARGV[2]  claim tag "<owner>|<attempt nonce>" of the caller: the attempt id
-- ARGV[3]  horizon ms
--
-- Delivered and unknown are facts about the request and overwrite any claim; release only
-- removes the caller's own claim, never a delivered mark or someone else's claim. An unknown
-- mark names its attempt ("u|<tag>"): only a replay of the dead-letter that carries this
-- attempt id may override it (lua/claim.lua).
-- Returns how many keys changed.
local outcome, tag, horizon = ARGV[1], ARGV[2], tonumber(ARGV[3])
local mine = 'c|' .. tag .. '|'
local changed = 0
for _, key in ipairs(KEYS) do
  if outcome == 'r' then
    local value = redis.call('GET', key)
    if value and string.sub(value, 1, #mine) == mine then
      redis.call('DEL', key)
      changed = changed + 1
    end
  elseif outcome == 'd' then
    redis.call('SET', key, 'd', 'PX', horizon)
    changed = changed + 1
  else
    -- never downgrade a delivered mark to unknown
    if redis.call('GET', key) ~= 'd' then
      redis.call('SET', key, 'u|' .. tag, 'PX', horizon)
      changed = changed + 1
    end
  end
end
return changed
