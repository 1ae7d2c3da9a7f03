-- Claim the event ids of one request, atomically per bucket, in one round trip.
--
-- Layout (consumer/state/dedup_layout.py): an id's mark is field <digest> of the hash
-- "<bucket tag>:<slice>", slice = floor(time / slice ms), which expires at the slice's end plus
-- the horizon. A lookup reads the bucket's live slices, newest first (and the next one, which
-- holds marks written while Redis's clock was ahead): the newest holding the id is its state.
-- Every write goes to the current slice and removes the id from the slice it was found in.
--
-- KEYS[g]     the tag of the g-th bucket of this call (one on a Redis Cluster: one slot per call)
-- KEYS[2]     on a Redis Cluster only (one bucket, no KEYS[G+i]): the bucket's guard, a key never
--             written or read, declared so that Redis runs the call only where its slot is stable
--             (consumer/state/dedup_layout.py, `reshard_guard`)
-- KEYS[G+i]   with ARGV[6] = 'k': the key 0.2.0 kept the i-th id's mark in (counted over all
--             buckets in order), read for one horizon after the upgrade (a single Redis)
-- ARGV[1]     claim tag "<owner>|<attempt nonce>": the id of this attempt. Running the same call
--             again (a retry after a lost reply, a renewal) finds its own claims and answers C
--             again instead of H
-- ARGV[2]     lease ms: a claim older than this was left by a replica that died or stalled between
--             claiming and marking, so the event may or may not have reached Pisano
-- ARGV[3]     horizon ms: how long any state is kept (DEDUP_HORIZON_S), at least
-- ARGV[4]     slice ms
-- ARGV[5]     G, the number of buckets
-- ARGV[6]     0.2.0's marks: '' not read, 'k' read from KEYS[G+i], 'a' their values are arguments
--             (a cluster reads them beforehand from their own slot)
-- ARGV[7]     the length of a field (a digest of the id)
-- ARGV[8]     the layout (consumer/state/dedup_layout.py), copied into each new slice hash
-- ARGV[9]     arming (consumer/state/arming.py `Arming`): 'a' a request may leave under these claims
--             from now on (the renewal just before a POST); 'p' none has left that may have reached
--             Pisano (after an attempt that certainly failed, while its retry waits);
--             'k' keep each own claim as it is (a heartbeat), a new one armed. A second character
--             'r' is the renewal mode (a renewal, a disarm, a beat: consumer/delivery/claims.py):
--             only the caller's own claims are renewed; an id found free, or taken by anyone else,
--             or one a first claim would take over, is answered L (lost) and nothing is written
--             for it (see Returns). Only a batch's first claim, and that same call run again
--             after a lost reply, takes an id anew: a renewal whose reply was lost is not
--             cancelled and may land after its request released the ids, and taking them then
--             left a stray claim under an attempt that sends nothing (another replica's copy
--             held back a lease, then dead-lettered `ambiguous`). After a Redis that lost its
--             data, every renewal finds its ids free: the request gives them up unsent, and
--             their next attempt claims them afresh. Without the 'r' ('a', 'p', 'k' alone) a
--             call takes free ids as before. Each build sends its own script text, so a build
--             before this mode never runs it; it writes no value a former build cannot read.
-- then per bucket: n; the n fields concatenated (one argument: fewer arguments to parse); k and
--             k pairs (index, override); e and e pairs (index, earlier tags); with 'a': m and m
--             pairs (index, 0.2.0 value), only for the ids that have one. The override is the
--             attempt whose unknown mark the id may override (ids without one have none): a
--             signed replay of an `ambiguous` dead-letter names the attempt an SRE checked with
--             Pisano (its `dlq.attempt.id`); any other record names none. So a replay never
--             overrides a mark written by an attempt nobody checked: a second DLQ copy, or a copy
--             whose replay is itself ambiguous, finds another attempt's mark and is dead-lettered
--             again. The earlier tags (most ids have none) are the attempts of this replica that gave
--             the id up without sending it and whose claim may still be here (a claim whose
--             reply was lost, a release that never landed), space-separated (consumer/delivery/
--             claims.py, `Claim.let_go`). Their claim, live or lapsed, or the unknown mark it
--             lapsed into, is taken over: none of them sent the id, so holding it back for their
--             lease and then dead-lettering it as ambiguous would only be wrong.
--
-- Values: "d" delivered; "u|<attempt>" fate unknown after that attempt ("u" alone, written before
-- attempts were recorded, counts as attempt "-"); "c|<owner>|<nonce>|<claimed at ms>" claimed;
-- "c|<owner>|<nonce>|u|<attempt>|<claimed at ms>" claimed over the unknown mark of <attempt>
-- (a replay's override): the mark the claim replaced, which lua/settle.lua puts back when the
-- claim is released, and only then. Kept in the claim itself, so a retry or a renewal of the
-- claim (which finds its own claim, not the mark) and a takeover of it carry it on, and no caller
-- can name a mark that was not there. Every other claim has the first form, that of 0.3.x.
-- A claim past its lease becomes "u|<its attempt>" when found: its fate is unknown from then on,
-- and its late owner can no longer renew it. A 0.2.0 mark counts when no slice holds the id.
-- A pending claim (ARGV[9] 'p') writes its time with a leading '0' ("c|<tag>|0<ms>"): no request
-- that may have reached Pisano has left under it. Past its lease it is not unknown but what it
-- replaced: the unknown mark of its `over` attempt, or nothing (the id is free: claimed again at
-- once). The renewal before a POST writes the time plainly (armed): from then on a lapse is unknown.
-- The '0' keeps every form above: a build before pending claims reads one as an ordinary claim of
-- the same tag and time (so it is held, then unknown under its own attempt, as before), and a
-- claim of such a build counts as armed.
-- Tombstones (lua/settle.lua): a first claim (not the renewal mode) also reads field "x<tag>" of
-- each slice it reads, in the same HMGET: one more field, no more commands. Its ids released with
-- a tombstone ("t") are answered H and nothing is written for them: this call is that release's
-- late first claim (its reply was lost, the call not cancelled), and taking them would leave a claim
-- under an attempt that never sends. Any other attempt's claim never reads another tag's field.
-- Returns {statuses, attempts}: one char per id in argument order (C claimed for the caller,
-- D already delivered: skip it, H claimed by a live attempt elsewhere: hold it back, U fate
-- unknown: dead-letter as ambiguous; L, in the renewal mode only, the caller's claim is gone:
-- do not send), then for each U in order the attempt whose mark it is.
local call, sub = redis.call, string.sub
local now_parts = call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local tag, lease, horizon, slice = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local groups, legacy_mode = tonumber(ARGV[5]), ARGV[6]
local arming, renewal = sub(ARGV[9], 1, 1), sub(ARGV[9], 2, 2) == 'r'
local mine = 'c|' .. tag .. '|'
local mine_len = #mine
-- the value of a claim that replaced nothing, armed or pending (built once: most ids take one)
local claim_armed, claim_pending = mine .. now, mine .. '0' .. now
local current = math.floor(now / slice)
local oldest = math.floor((now - horizon) / slice)
local expire_at = (current + 1) * slice + horizon
local CHUNK = 2000 -- unpack() stays well below Lua's stack limit

local function hmget(key, fields, n)
  if n <= CHUNK then return call('HMGET', key, unpack(fields)) end
  local out = {}
  for first = 1, n, CHUNK do
    local last = math.min(first + CHUNK - 1, n)
    local values = call('HMGET', key, unpack(fields, first, last))
    for j = first, last do out[j] = values[j - first + 1] end
  end
  return out
end

local function hash_call(command, key, items, count)
  for first = 1, count, CHUNK do
    call(command, key, unpack(items, first, math.min(first + CHUNK - 1, count)))
  end
end

-- A new slice hash starts with field '#' holding the layout (ARGV[8]): a copy should its key be
-- lost, and a value too long for the compact small-hash encoding (hash-max-listpack-value, 64
-- bytes by default), which is searched field by field: a busy slice hash would pay that for
-- its first 512 marks.
local SENTINEL, SENTINEL_VALUE = '#', ARGV[8]

-- Write field/value pairs into a slice hash that lives until `at` at least (never shortened: a
-- replica with a longer horizon may have written to it).
local function write_slice(key, items, count, at)
  local ttl = call('PTTL', key)
  if ttl == -2 then call('HSET', key, SENTINEL, SENTINEL_VALUE) end
  hash_call('HSET', key, items, count)
  if ttl < 0 or now + ttl < at then call('PEXPIREAT', key, at) end
end

local width = tonumber(ARGV[7])

-- k pairs (index, value) from ARGV[pos + 1] on, into a table by index
local function pairs_at(pos)
  local k, into = tonumber(ARGV[pos]), {}
  for i = 1, k do into[tonumber(ARGV[pos + 2 * i - 1])] = ARGV[pos + 2 * i] end
  return into, pos + 1 + 2 * k
end

-- A claim value's owner tag, the attempt whose unknown mark it replaced (nil: none), and when it was
-- taken; nil for a value that is no claim. Tags are hex ("<owner>|<nonce>"), so the first "|u|"
-- after "c|" ends the tag; the replaced attempt may hold "|" itself.
local function parse_claim(value)
  local owner_tag, over, claimed_at = string.match(value, '^c|(.-)|u|(.*)|(%d+)$')
  if owner_tag then return owner_tag, over, claimed_at end
  owner_tag, claimed_at = string.match(value, '^c|(.*)|(%d+)$')
  return owner_tag, nil, claimed_at
end

-- A claim value (or its time) written pending: its time begins with '0' (see Values)
local function is_pending(value)
  return string.find(value, '|0%d*$') ~= nil or string.find(value, '^0%d*$') ~= nil
end

-- `tag` is one of the space-separated `tags` (nil: none)
local function gave_up(tags, tag)
  return tags ~= nil and string.find(' ' .. tags .. ' ', ' ' .. tag .. ' ', 1, true) ~= nil
end

local out, reply = {}, {''}
local pos, legacy_index, out_count = 10, 0, 0
-- the field of this attempt's tombstones (nil in the renewal mode, which takes no id anyway)
local stone_field = not renewal and ('x' .. tag) or nil
for g = 1, groups do
  local base = KEYS[g]
  local n, packed = tonumber(ARGV[pos]), ARGV[pos + 1]
  local fields, overrides, earlier, legacy = {}, nil, nil, {}
  for j = 1, n do fields[j] = sub(packed, (j - 1) * width + 1, j * width) end
  overrides, pos = pairs_at(pos + 2)
  earlier, pos = pairs_at(pos)
  if legacy_mode == 'a' then
    legacy, pos = pairs_at(pos)
  elseif legacy_mode == 'k' then
    for j = 1, n do
      legacy[j] = call('GET', KEYS[groups + legacy_index + j])
    end
    legacy_index = legacy_index + n
  end
  local found, where, buried = {}, {}, nil
  local read = n
  if stone_field then read = n + 1; fields[read] = stone_field end
  for s = current + 1, oldest, -1 do
    local key = base .. ':' .. s
    if call('EXISTS', key) == 1 then
      local values = hmget(key, fields, read)
      for j = 1, n do
        local value = values[j]
        if value and not found[j] then found[j], where[j] = value, s end
      end
      local stones = read > n and values[read]
      if stones then
        buried = buried or {}
        for at = 1, #stones, width do buried[sub(stones, at, at + width - 1)] = true end
      end
    end
  end
  local writes, moved, w = {}, nil, 0
  for j = 1, n do
    local value = found[j]
    if not value and legacy[j] then value = legacy[j] end
    -- `over`: the attempt whose unknown mark the claim replaces (written into it, see Values);
    -- `pending`: the claim is written pending (see Values); `own`: the caller's claim, renewed
    local state, attempt, expired, write, over, own
    local pending = arming == 'p'
    if buried and buried[fields[j]] then
      state = 'H'  -- released with this attempt's tombstone: this call landed late (see Tombstones)
    elseif not value then
      state, write = 'C', true
    elseif value == 'd' then
      state = 'D'
    elseif sub(value, 1, mine_len) == mine then
      -- a retry or renewal: what the first run replaced stays recorded
      state, write, own = 'C', true, true
      over = string.match(sub(value, mine_len + 1), '^u|(.*)|%d+$')
      if arming == 'k' then pending = is_pending(value) end
    elseif value == 'u' then
      attempt = '-'
    elseif sub(value, 1, 2) == 'u|' then
      -- The claim's own attempt even where a replica of the former build (before claims recorded
      -- what they replaced) lapsed a recorded claim into "u|<owner>|<nonce>|u|<attempt>": this
      -- build names that lapse "u|<owner>|<nonce>", and only a tag (hex, no "|u|") is an attempt a
      -- dead-letter can carry, a replay can be signed for, and a takeover can name.
      attempt = string.match(value, '^u|(.-)|u|') or sub(value, 3)
    else
      local owner_tag, owner_over, claimed_at = parse_claim(value)
      if owner_tag and gave_up(earlier[j], owner_tag) then
        -- a takeover inherits what the given-up claim replaced: that mark is still the truth
        state, write, over = 'C', true, owner_over
      elseif now - (tonumber(claimed_at) or 0) < lease then
        state = 'H'
      elseif owner_tag and is_pending(claimed_at) then
        -- Lapsed pending: no request under it may have reached Pisano. What it replaced is the
        -- truth again: the unknown mark of its `over` attempt (written back if it stays so), or
        -- nothing, and the id is free.
        if owner_over then
          attempt, expired = owner_over, true
        else
          state, write = 'C', true
        end
      else
        attempt, expired = owner_tag or '-', true
      end
    end
    if attempt then
      if overrides[j] == attempt then
        state, write, over = 'C', true, attempt
      elseif gave_up(earlier[j], attempt) then
        -- The given-up claim lapsed into this mark, and what it had replaced went with it: a
        -- replay's takeover keeps the id unknown under the attempt it replays (never a duplicate;
        -- at worst a plain copy dead-lettered), a plain one replaces nothing.
        state, write, over = 'C', true, overrides[j]
      else
        state = 'U'
        reply[#reply + 1] = attempt
        if expired then write = 'u|' .. attempt end
      end
    end
    if renewal and not own then
      -- the renewal mode (ARGV[9]): the caller's claim is gone; whatever the id holds stays
      if state == 'C' then state = 'L' end
      write = nil
    end
    if write == true then
      if over then
        write = mine .. 'u|' .. over .. '|' .. (pending and '0' or '') .. now
      else
        write = pending and claim_pending or claim_armed
      end
    end
    if write then
      writes[w + 1], writes[w + 2] = fields[j], write
      w = w + 2
      local s = where[j]
      if s and s ~= current then
        moved = moved or {}
        moved[s] = moved[s] or {}
        table.insert(moved[s], fields[j])
      end
    end
    out_count = out_count + 1
    out[out_count] = state
  end
  if w > 0 then write_slice(base .. ':' .. current, writes, w, expire_at) end
  if moved then
    for s, moved_fields in pairs(moved) do
      hash_call('HDEL', base .. ':' .. s, moved_fields, #moved_fields)
    end
  end
end
reply[1] = table.concat(out)
return reply
