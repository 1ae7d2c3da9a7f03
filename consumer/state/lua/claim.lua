-- Claim the event ids of one request, atomically, in one round trip.
--
-- KEYS[i]    the dedup key of the i-th event
-- ARGV[1]    claim tag "<owner>|<attempt nonce>": the id of this attempt. Running the same call
--            again (a retry after a lost reply, a renewal) finds its own claims and answers C
--            again instead of H
-- ARGV[2]    lease ms: a claim older than this was left by a replica that died or stalled between
--            claiming and marking, so the event may or may not have reached Pisano
-- ARGV[3]    horizon ms: how long any state is kept (DEDUP_HORIZON_S)
-- ARGV[3+i]  the attempt whose unknown mark the i-th record may override, '' for none: a signed
--            replay of an `ambiguous` dead-letter names the attempt an SRE checked with Pisano
--            (its `dlq.attempt.id`); any other record names none. So a replay never overrides a
--            mark written by an attempt nobody checked: a second DLQ copy, or a copy whose
--            replay is itself ambiguous, finds another attempt's mark and is dead-lettered again.
--
-- Values: "d" delivered; "u|<attempt>" fate unknown after that attempt ("u" alone, written before
-- attempts were recorded, counts as attempt "-"); "c|<owner>|<nonce>|<claimed at ms>" claimed.
-- A claim past its lease becomes "u|<its attempt>" when found: its fate is unknown from then on,
-- and its late owner can no longer renew it.
-- Returns {statuses, attempts}: one char per key (C claimed for the caller, D already delivered:
-- skip it, H claimed by a live attempt elsewhere: hold it back, U fate unknown: dead-letter as
-- ambiguous), then for each U in order the attempt whose mark it is.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local tag, lease, horizon = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local mine = 'c|' .. tag .. '|'
local claim = mine .. now
local out = {}
local reply = {''}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  local state, attempt, expired
  if not value then
    state = 'C'
  elseif value == 'd' then
    state = 'D'
  elseif string.sub(value, 1, #mine) == mine then
    state = 'C'
  elseif value == 'u' then
    attempt = '-'
  elseif string.sub(value, 1, 2) == 'u|' then
    attempt = string.sub(value, 3)
  else
    local owner_tag, claimed_at = string.match(value, '^c|(.*)|(%d+)$')
    if now - (tonumber(claimed_at) or 0) < lease then
      state = 'H'
    else
      attempt, expired = owner_tag or '-', true
    end
  end
  if attempt then
    if ARGV[3 + i] ~= '' and ARGV[3 + i] == attempt then
      state = 'C'
    else
      state = 'U'
      reply[#reply + 1] = attempt
      if expired then
        redis.call('SET', key, 'u|' .. attempt, 'PX', horizon)
      end
    end
  end
  if state == 'C' then
    redis.call('SET', key, claim, 'PX', horizon)
  end
  out[i] = state
end
reply[1] = table.concat(out)
return reply
