-- Reserve the phones of one request for the contact cooldown, atomically per call (issue 13, 1).
--
-- KEYS[i]    the cooldown key of the i-th phone (consumer/state/cooldown.py: a keyed hash of the
--            phone, never the phone; on a Redis Cluster all keys of one call share a bucket's slot)
-- ARGV[1]    reservation tag: the dedup claim tag of this attempt. Running the same call again (a
--            retry after a lost reply, a renewal before a retry) finds its own reservations and
--            answers R again
-- ARGV[2]    lease ms (DEDUP_CLAIM_LEASE_MS): a reservation older than this was left by a replica
--            that died or stalled between reserving and settling: its request may have reached
--            Pisano, so it counts as a contact made when the lease ran out
-- ARGV[3]    window ms: this campaign's cooldown; a contact younger than this refuses the phone
-- ARGV[4]    ttl ms: how long a contact is kept (the configuration's longest cooldown)
-- ARGV[5]    arming, as the dedup claim's (lua/claim.lua): 'a' a request may leave under these
--            reservations from now on; 'p' none has left that may have reached Pisano; 'k' keep
--            each own reservation as it is (a heartbeat), a new one armed; a second character 'r'
--            the renewal mode, as the claim's: only the caller's own live reservation is renewed;
--            any other phone is answered L (lost) when it would have been reserved, and nothing is
--            written for it (a late renewal leaves no reservation to count as a contact)
-- ARGV[5+i]  the attempt whose unknown mark, or lapsed reservation, the i-th phone may override
--            ('' for none): a signed replay of an `ambiguous` dead-letter, whose own attempt left it
-- ARGV[5+N+i] (only when given, N = #KEYS) the earlier attempts of this replica that gave the i-th
--            phone up without sending to it, space-separated ('' for none): their reservation may
--            still be here (a lost reply, a release that never landed: consumer/delivery/claims.py,
--            `Claim.let_go`). It is taken over, live or lapsed, with the contact it covers: none
--            of them texted the phone, so it must neither hold the phone back nor count as a contact.
--
-- Values: "r|<lease until ms>|<tag>" reserved; "c|<at ms>|<tag>" accepted by Pisano at that time;
-- "u|<at ms>|<tag>" fate unknown since then (counted as a contact: the customer may have been texted).
-- A reservation made over a contact (one older than this campaign's window, which another
-- campaign's longer window may still count; or the unknown contact a replay may override) keeps it
-- after a '#': "r|<until>|<tag>#c|<at>|<tag>". A release puts it back (lua/settle_phones.lua), so
-- a reservation that is not used (its request refused, or its event skipped, held back or
-- suppressed after an optimistic reservation: consumer/delivery/claims.py) forgets no contact.
-- A pending reservation writes its lease with a leading '0' ("r|0<until>|<tag>"): past its lease it
-- is what it covered (or nothing), not a contact, since no request under it may have reached Pisano.
-- A build before pending reservations reads the same time and tag, and counts it a contact as before.
-- A released phone may carry tombstones (lua/settle_phones.lua): "<contact>#x|<tags>", "c|0|-" for
-- no contact. The value stands for its contact (nothing for "c|0|-"); the attempts in <tags> take
-- nothing (H; L in the renewal mode): their first reservation whose reply was lost landed after
-- its release. A reservation made over it covers the contact and the tombstones
-- ("r|<until>|<tag>#<contact>#x|<tags>"), which its release puts back (lua/settle_phones.lua): else
-- another attempt reserving the phone meanwhile (a copy, an optimistic reservation released at once)
-- dropped them, and the late call took the phone after that release. A build before tombstones
-- reads what it covers as that contact (its release puts back both, or nothing once the contact
-- is past the ttl: as before), and a reservation of its own over it keeps the contact only.
-- Returns one char per key: R reserved for the caller (it may send), C in cooldown (the phone was
-- contacted within the window: do not send), H reserved by a live attempt elsewhere (hold back),
-- L (the renewal mode only) the caller's reservation is gone: do not send.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local tag, lease, window, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local arming, renewal = string.sub(ARGV[5], 1, 1), string.sub(ARGV[5], 2, 2) == 'r'
local n = #KEYS
local with_earlier = #ARGV > 5 + n

-- the i-th phone's reservation by `owner` was given up unsent by an earlier attempt of ours
local function gave_up(i, owner)
  return with_earlier and owner ~= '' and
    string.find(' ' .. ARGV[5 + n + i] .. ' ', ' ' .. owner .. ' ', 1, true) ~= nil
end

local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  local state, covered, pending = 'R', '', arming == 'p'
  local renewing = false  -- the caller's own live reservation
  local buried = false  -- released with the caller's tombstone: this call landed late
  local stones = value and string.find(value, '#x|', 1, true)
  if stones then
    stones, value = string.sub(value, stones + 3), string.sub(value, 1, stones - 1)
    buried = string.find(' ' .. stones .. ' ', ' ' .. tag .. ' ', 1, true) ~= nil
    if value == 'c|0|-' then value = nil end
  end
  if value then
    local kind, at = string.match(value, '^(%a)|(%d+)|')
    if kind == 'r' and string.sub(at, 1, 1) == '0' and now >= tonumber(at) then
      -- a lapsed pending reservation texted no one: what it covered stands, or nothing
      value = string.match(value, '#(.*)$')
      if value == '' then value = nil end
    end
  end
  if value then
    local kind, at, owner, prior = string.match(value, '^(%a)|(%d+)|([^#]*)#?(.*)$')
    local own = string.match(value, '^[^#]*')  -- the value without what it covers
    if kind == 'r' and owner == tag and arming == 'k' then pending = string.sub(at, 1, 1) == '0' end
    at = tonumber(at) or now  -- a malformed value counts as a contact made now: never a send
    if kind == 'r' and ((owner == tag and now < at) or gave_up(i, owner)) then
      -- our own live reservation, or one an earlier attempt of ours gave up: renewed or taken
      -- over below, still covering its contact
      state, covered, renewing = 'R', prior, owner == tag and now < at
    elseif kind == 'r' and now < at then
      state = 'H'
    elseif (kind == 'u' or kind == 'r') and owner == ARGV[5 + i] and owner ~= '' then
      -- The replay of the ambiguous attempt that left this contact, checked by an SRE: its unknown
      -- mark, or its reservation that lapsed (a live one answered H above). A replica killed between
      -- the POST and settling leaves only the lapsed reservation; refused here, the replay would end
      -- as `cooldown`, final, and the survey the SRE checked would never go.
      state, covered = 'R', own
    elseif now - at < window then
      state = 'C'
    else
      covered = own  -- a contact outside this campaign's window
    end
  end
  if buried then
    state = renewal and 'L' or 'H'
  elseif renewal and not renewing then
    -- the renewal mode (ARGV[5]): the caller's reservation is gone; the key stays as it is
    if state == 'R' then state = 'L' end
  elseif state == 'R' then
    local reservation = 'r|' .. (pending and '0' or '') .. (now + lease) .. '|' .. tag
    -- another attempt's tombstones ride on under the reservation (see Values)
    if stones then covered = (covered ~= '' and covered or 'c|0|-') .. '#x|' .. stones end
    if covered ~= '' then
      redis.call('SET', key, reservation .. '#' .. covered, 'PX', lease + ttl)
    else
      redis.call('SET', key, reservation, 'PX', lease + ttl)
    end
  end
  out[i] = state
end
return table.concat(out)
