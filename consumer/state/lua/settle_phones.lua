-- Settle the phone reservations of one request with its fate (consumer/state/cooldown.py).
--
-- KEYS[i]    the cooldown key of the i-th phone
-- ARGV[1]    the request's fate: 'd' accepted by Pisano (the cooldown starts now), 'u' fate unknown
--            (counted as a contact now: the customer may have been texted), 'r' certainly not sent
--            (the caller's own reservation is removed: the phone is free again), 't' a release
--            that leaves the caller's tombstone (below)
-- ARGV[2]    reservation tag of the attempt
-- ARGV[3]    ttl ms: how long a contact is kept (the configuration's longest cooldown)
-- ARGV[4]    with 't' only: lease ms
--
-- A contact ('d', 'u') is written whatever the key holds: it happened, whoever holds the phone
-- now. A release removes only the caller's own reservation, never another's or a contact, and puts
-- back the contact the reservation covered (after its '#': lua/reserve_phones.lua) with the expiry
-- it had (its time plus the ttl), so an unused reservation forgets no contact; and the tombstones it
-- carried, for as long as the reservation would have lived (below).
--
-- Tombstones: a batch's first reservation whose reply was lost is not cancelled, and may land after
-- its attempt released the phone; it would reserve it again under an attempt that never sends,
-- to lapse into a contact nobody made. So the release of phones such a call may reserve ('t',
-- consumer/delivery/claims.py `_doubtful`) leaves what a release leaves (the contact covered, or
-- nothing: "c|0|-", a contact at time 0, outside every window) followed by "#x|<tags>", the
-- space-separated attempts whose late reservation must take nothing (lua/reserve_phones.lua). A
-- contact keeps any tombstone it already had. Another attempt's reservation stays that attempt's,
-- with its lease, and carries the tombstone after what it covers, as it carries those it was made
-- over: its release puts them back (lua/reserve_phones.lua). A
-- build before tombstones reads the value as that contact, what it covers after '#' ignored, as
-- for any contact. Kept as long as a reservation is (lease plus ttl), then gone with the key.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local fate, tag, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
  if fate == 't' then
    local value = redis.call('GET', key) or nil  -- a missing key reads false
    local stands = value  -- what the phone stands for once released
    if value then
      local owner, covered = string.match(value, '^r|%d+|([^#]*)#?(.*)$')
      if owner == tag then
        local at = tonumber(string.match(covered, '^%a|(%d+)|'))
        local carried = string.find(covered, '#x|', 1, true)  -- tombstones it carried
        stands = (at and at + ttl > now) and covered or (carried and 'c|0|-' .. string.sub(covered, carried)) or nil
      elseif owner then
        -- another attempt's reservation (the lost call's answered retry found the phone held):
        -- still its own, same lease, and it carries the tombstone, which its release puts back
        -- (lua/reserve_phones.lua); else the late call took the phone once that attempt let go
        stands = false
        local contact, tags = covered, tag
        local carried = string.find(covered, '#x|', 1, true)
        if carried then
          contact, tags = string.sub(covered, 1, carried - 1), string.sub(covered, carried + 3)
          if not string.find(' ' .. tags .. ' ', ' ' .. tag .. ' ', 1, true) then tags = tags .. ' ' .. tag end
        end
        if contact == '' then contact = 'c|0|-' end
        redis.call('SET', key, string.match(value, '^[^#]*') .. '#' .. contact .. '#x|' .. tags,
          'PX', math.max(redis.call('PTTL', key), 1))
      end
    end
    if stands ~= false then
      local contact, tags = stands, tag
      local stones = stands and string.find(stands, '#x|', 1, true)
      if stones then
        contact, tags = string.sub(stands, 1, stones - 1), string.sub(stands, stones + 3)
        -- a release asked again (its reply lost) adds no second copy of the tag
        if not string.find(' ' .. tags .. ' ', ' ' .. tag .. ' ', 1, true) then tags = tags .. ' ' .. tag end
      end
      if not contact or contact == '' then contact = 'c|0|-' end
      redis.call('SET', key, contact .. '#x|' .. tags, 'PX', tonumber(ARGV[4]) + ttl)
    end
  elseif fate == 'r' then
    local value = redis.call('GET', key)
    local owner, covered
    if value then owner, covered = string.match(value, '^r|%d+|([^#]*)#?(.*)$') end
    if owner == tag then
      local at = tonumber(string.match(covered, '^%a|(%d+)|'))
      local carried = string.find(covered, '#x|', 1, true)
      if carried then
        -- the tombstones the reservation carried (lua/reserve_phones.lua) are put back, with the
        -- contact while it is within the ttl, and kept as long as the reservation would have been
        if not (at and at + ttl > now) then covered = 'c|0|-' .. string.sub(covered, carried) end
        local left = math.max(redis.call('PTTL', key), at and at + ttl - now or 0, 1)
        redis.call('SET', key, covered, 'PX', left)
      elseif at and at + ttl > now then
        redis.call('SET', key, covered, 'PX', at + ttl - now)
      else
        redis.call('DEL', key)
      end
    end
  else
    local kind = fate == 'd' and 'c' or 'u'
    redis.call('SET', key, kind .. '|' .. now .. '|' .. tag, 'PX', ttl)
  end
end
return #KEYS
