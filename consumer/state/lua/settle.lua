-- Record the outcome of one request for its event ids, atomically per bucket.
--
-- Layout as in lua/claim.lua: field <digest> of "<bucket tag>:<slice>", newest slice first.
--
-- KEYS[g]     the tag of the g-th bucket of this call (one on a Redis Cluster)
-- KEYS[2]     on a Redis Cluster only (one bucket, no KEYS[G+i]): the bucket's guard, a key never
--             written or read, declared so that Redis runs the call only where its slot is stable
--             (consumer/state/dedup_layout.py, `reshard_guard`)
-- KEYS[G+i]   with ARGV[6] = 'k': the key 0.2.0 kept the i-th id's mark in
-- ARGV[1]     outcome: "d" delivered (Pisano answered 200), "u" fate unknown (ambiguous), or
--             "r" release (the request certainly failed: the event may be sent again), or "t" a
--             release that leaves the caller's tombstone (see Tombstones)
-- ARGV[2]     claim tag "<owner>|<attempt nonce>" of the caller: the attempt id
-- ARGV[3]     horizon ms
-- ARGV[4]     slice ms
-- ARGV[5]     G, the number of buckets
-- ARGV[6]     0.2.0's marks (read for "u" only): '' not read, 'k' from KEYS[G+i], 'a' as arguments
-- ARGV[7]     the length of a field
-- ARGV[8]     the layout, copied into each new slice hash
-- then per bucket: n; the n fields concatenated; with 'a': m and m pairs (index, 0.2.0 value)
--
-- Delivered and unknown are facts about the request and overwrite any claim; release only
-- removes the caller's own claim, never a delivered mark or someone else's claim. A claim that
-- replaced an unknown mark (a signed replay's override: "c|<tag>|u|<attempt>|<ms>", lua/claim.lua)
-- puts that mark back when released: that attempt's fate is still unknown, and a plain copy of
-- the event must find it so. Any other claim released leaves no mark: one that found the id free
-- (never claimed, released, its mark lapsed) must leave it free. An unknown mark names its attempt
-- ("u|<tag>"): only a replay of the dead-letter that carries this attempt id may override it.
-- Delivered is written without reading: it wins over whatever older slices hold. (Only a claim
-- written in a later slice, by a Redis whose clock then went back a whole slice, would hide it:
-- that id then ends as ambiguous once the claim's lease passed, never sent again.)
--
-- Tombstones: a batch's first claim (the one call that takes free ids, lua/claim.lua) whose reply
-- was lost is not cancelled, and may land after its attempt released the ids: it would take them
-- again under an attempt that never sends, and another replica's copy of the event would be held
-- back a lease, then dead-lettered `ambiguous`. So the release of ids such a call may take ("t",
-- consumer/delivery/claims.py `_doubtful`) also appends their fields to field "x<tag>" of the
-- current slice: a first claim of that tag finds them there and takes nothing; nobody else reads
-- the field (older builds neither: it is no field of theirs). It lives with its slice: 14 bytes
-- per id released so (again for each retry of a release whose reply was lost), beside their marks.
-- Returns how many ids changed.
local call, sub = redis.call, string.sub
local now_parts = call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local outcome, tag, horizon, slice = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local groups, legacy_mode, width = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local mine = 'c|' .. tag .. '|'
local mine_len = #mine
local current = math.floor(now / slice)
local oldest = math.floor((now - horizon) / slice)
local expire_at = (current + 1) * slice + horizon
local CHUNK = 2000 -- unpack() stays well below Lua's stack limit

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

local function remove(removed, s, field)
  removed = removed or {}
  removed[s] = removed[s] or {}
  table.insert(removed[s], field)
  return removed
end

local changed = 0
local pos, legacy_index = 9, 0
for g = 1, groups do
  local base = KEYS[g]
  local n, packed = tonumber(ARGV[pos]), ARGV[pos + 1]
  pos = pos + 2
  local key = base .. ':' .. current
  local fields, legacy = {}, {}
  if outcome == 'd' then
    -- field, value pairs straight from the packed fields
    local writes = {}
    for j = 1, n do
      writes[2 * j - 1], writes[2 * j] = sub(packed, (j - 1) * width + 1, j * width), 'd'
    end
    write_slice(key, writes, 2 * n, expire_at)
    changed = changed + n
  else
    for j = 1, n do fields[j] = sub(packed, (j - 1) * width + 1, j * width) end
    if legacy_mode == 'a' then
      local k = tonumber(ARGV[pos])
      for i = 1, k do legacy[tonumber(ARGV[pos + 2 * i - 1])] = ARGV[pos + 2 * i] end
      pos = pos + 1 + 2 * k
    elseif legacy_mode == 'k' then
      for j = 1, n do legacy[j] = call('GET', KEYS[groups + legacy_index + j]) end
      legacy_index = legacy_index + n
    end
    local found, where = {}, {}
    for s = current + 1, oldest, -1 do
      local slice_key = base .. ':' .. s
      if call('EXISTS', slice_key) == 1 then
        for first = 1, n, CHUNK do
          local last = math.min(first + CHUNK - 1, n)
          local got = call('HMGET', slice_key, unpack(fields, first, last))
          for j = first, last do
            local value = got[j - first + 1]
            if value and not found[j] then found[j], where[j] = value, s end
          end
        end
      end
    end
    local writes, removed, w = {}, nil, 0
    for j = 1, n do
      local value, s = found[j], where[j]
      if outcome ~= 'u' then
        if value and sub(value, 1, mine_len) == mine then
          local over = string.match(sub(value, mine_len + 1), '^u|(.*)|%d+$')
          if over then
            writes[w + 1], writes[w + 2] = fields[j], 'u|' .. over
            w = w + 2
            if s ~= current then removed = remove(removed, s, fields[j]) end
          else
            removed = remove(removed, s, fields[j])
          end
          changed = changed + 1
        end
      else
        if not value and legacy[j] then value = legacy[j] end
        -- never downgrade a delivered mark to unknown
        if value ~= 'd' then
          writes[w + 1], writes[w + 2] = fields[j], 'u|' .. tag
          w = w + 2
          if s and s ~= current then removed = remove(removed, s, fields[j]) end
          changed = changed + 1
        end
      end
    end
    if outcome == 't' then
      local stone = 'x' .. tag
      writes[w + 1], writes[w + 2] = stone, (call('HGET', key, stone) or '') .. packed
      w = w + 2
    end
    if w > 0 then write_slice(key, writes, w, expire_at) end
    if removed then
      for s, removed_fields in pairs(removed) do
        hash_call('HDEL', base .. ':' .. s, removed_fields, #removed_fields)
      end
    end
  end
end
return changed
