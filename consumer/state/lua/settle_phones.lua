-- Settle the phone reservations of one request with its fate (consumer/state/cooldown.py).
--
-- KEYS[i]    the cooldown key of the i-th phone
-- ARGV[1]    the request's fate: 'd' accepted by Pisano (the cooldown starts now), 'u' fate unknown
--            (counted as a contact now: the customer may have been texted), 'r' certainly not sent
--            (the caller's own reservation is removed: the phone is free again)
-- ARGV[2]    reservation tag of the attempt
-- ARGV[3]    ttl ms: how long a contact is kept (the configuration's longest cooldown)
--
-- A contact ('d', 'u') is written whatever the key holds: it happened, whoever holds the phone
-- now. A release removes only the caller's own reservation, never another's or a contact, and puts
-- back the contact the reservation covered (after its '#': lua/reserve_phones.lua) with the expiry
-- it had (its time plus the ttl), so an unused reservation forgets no contact.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local fate, tag, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
  if fate == 'r' then
    local value = redis.call('GET', key)
    local owner, covered
    if value then owner, covered = string.match(value, '^r|%d+|([^#]*)#?(.*)$') end
    if owner == tag then
      local at = tonumber(string.match(covered, '^%a|(%d+)|'))
      if at and at + ttl > now then
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
