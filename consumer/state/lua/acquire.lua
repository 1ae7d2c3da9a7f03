-- Reserve the earliest request slot that keeps every throttle window within its limit, behind a
-- fence that holds the whole fleet whenever the state may have lost reservations.
--
-- KEYS[1]  log: the reserved slot times (ms, Redis clock), ascending, newest last
-- KEYS[2]  meta: a hash that never expires, so that its absence means "lost" (or "never used"):
--            epoch        id of this state's life; a new one each time the state is found missing
--            seq          reservations so far in this epoch
--            fence_until  no slot before this (ms): the fleet is held
--            pause_until  no slot before this either (Pisano answered 429)
--            beat         when a replica last read or wrote the state (every live replica does,
--                         every second, idle or not: limiter.py's heartbeat)
--            server       the replication id of the Redis that last wrote the state
--            last, last_n the newest slot pushed to the log, and how many entries of that value
--                         it ends with (at most keep): a log that lacks them while they still count
--                         lost reservations (the log deleted or restored alone)
--            keep, keep_at    the most entries a live replica's windows need, and when one last
--            reach, reach_at  said so; reach = its longest period + margin: how long an entry counts.
--                         A replica with fewer or shorter windows (PISANO_RATE_LIMITS changed in a
--                         rolling upgrade) trims and expires the log no shorter than these.
--            horizon, horizon_at  the longest horizon a live caller uses (THROTTLE_HORIZON_MS, or
--                         `pisano-sms check`'s own), and when one last said so: how far ahead a
--                         slot may have been granted. Kept for that long after it was last said.
--            pushed       the `seq` this version's newest reservation was given. The previous version
--                         counts its reservations in `seq` too, but records neither this nor its
--                         horizon: while `seq` is past `pushed`, the log's newest slot may be one of
--                         its, as far ahead as any version grants (LEGACY_HORIZON).
--            fenced       the last fence this version raised: a `fence_until` that is not it may
--                         be the previous version's, held for its own, unrecorded horizon.
--            skew         ms subtracted from Redis's TIME: the fleet's clock, every time above is in
--                         it. Raised by each forward step of Redis's clock a caller measures (see
--                         'step' below), so that the fleet's clock does not jump; absent: 0.
-- ARGV[1]  the caller's epoch, '' when it has none yet (a replica that never used the state)
-- ARGV[2]  the highest `seq` the caller was given in that epoch, 0 if none
-- ARGV[3]  margin ms added to every period: requests leave a little after their slot, not at it
-- ARGV[4]  horizon ms: a slot further away is refused (nothing reserved) with its wait
-- ARGV[5]  grace ms: how long to hold the fleet when the state is in doubt (see below)
-- ARGV[6]  '1' reserve a slot; '0' heartbeat only (check the state and report what the caller knows)
-- ARGV[7]  pace ms: 0 for the earliest allowed slot; else a paced request, whose slot is also no
--          earlier than the newest reservation + pace (consumer/delivery/pacing.py)
-- ARGV[8]  pace lead ms: a paced slot at most this far ahead is reserved; a later one is refused
-- ARGV[9]  prepare ms: no slot before now + this (the caller prepares its request before the slot,
--          so an immediate slot would find it late)
-- ARGV[10] legacy horizon ms: the longest horizon any version grants slots at (limiter.py's
--          LEGACY_HORIZON_MS, which THROTTLE_HORIZON_MS is bounded by)
-- ARGV[11] the fleet clock's `now` of the caller's previous reply ('' none: its first call)
-- ARGV[12] the caller's monotonic ms from receiving that reply to sending this call
-- ARGV[13] step tolerance ms: a gain of the clock over the caller's interval beyond this is a step
-- ARGV[14..] limit, period-ms pairs, one pair per window
--
-- Returns {status, wait_ms, epoch, slot_ms, seq, event, now, stepped, pause_until}: status 1 granted; 0
-- refused, nothing reserved, the slot is beyond the horizon; 3 refused, nothing reserved, the
-- fleet is fenced: ask again after wait_ms; 4 refused, nothing reserved, the pace's turn comes in
-- wait_ms; 2 heartbeat done. `event` names the fence this call raised ('' none), for the caller's
-- log; `now` is the fleet's clock (the caller sends it back next time, ARGV[11]); `stepped` the
-- forward step of Redis's clock this call measured and took out of the fleet's clock (0 none);
-- `pause_until` the end of the fleet's pause after a 429 (fleet clock, 0 none), so that every
-- replica learns of a pause within a heartbeat and gives up a slot it reserved inside it before
-- the pause began (consumer/delivery/slots.py: it would hear 429 and pause the fleet again).
--
-- The step (forward). Redis's clock may jump ahead (a failover to a node whose clock is ahead, an
-- NTP step): every slot in the log would then look older than it is, every window would count
-- too few until they aged out, and the fleet would exceed Pisano's windows. Redis cannot see its
-- own step; a caller can, against its monotonic clock: between the TIME of its previous call and
-- this one's, at least e = ARGV[12] passed (from that reply's arrival to this call's sending), so
-- gain = (now - prev) - e is at least the step (plus the two latencies in between, never less).
-- A gain beyond the tolerance is taken out of the fleet's clock at once, before anything below
-- reads `now`: skew += gain. That is (a) safe: the clock is set back by at least the step, so
-- the log's slots look as old as they are or younger (a window counts as many or more), pauses
-- and fences last as long or longer; (b) exact once: the next caller that measures across the
-- same step reads the corrected clock, so its gain is only what is left (none): k replicas do not
-- correct k times, and two steps in one interval are both taken out; (c) cheap: no log rewrite,
-- no fence, no extra round trip (the evidence rides on every call, heartbeats included); a
-- latency spike beyond the tolerance (a false step) sets the clock back by that spike, costing the
-- fleet that long once. The first call of a replica carries no evidence; every live replica
-- heartbeats each second, so a step is measured within a second even when nobody sends, and
-- before any grant by a replica that called before it. Not measured: a gain within the tolerance
-- (the margin absorbs it), and a step while no replica was alive (see README, "Limits").
-- A backward step is the 'clock' fence's (below): it only makes slots look younger (safe), unless
-- the state then lies further ahead than any slot is granted.
--
-- The pace. A paced request (a batch that is not full) is not reserved ahead of its turn: the
-- fleet's turns are `pace` apart whoever takes them, and a turn further than the lead is refused,
-- so a full batch that comes meanwhile is never queued behind a small one. The windows stay the
-- guard: a paced slot is the later of its turn and the earliest allowed slot.
--
-- The fence. Lost reservations still count at Pisano, and one may be for a slot up to `horizon`
-- (the longest a live caller uses: meta `horizon`) ahead of the moment it was lost; so once a loss
-- is proven the fleet is held for hold = horizon + longest period + margin from now, after which
-- no lost slot is in any window.
--   * proven loss: the caller knew an epoch and finds none or another one (Redis restarted
--     without its data, FLUSHALL, keys deleted), or the caller was given a higher `seq` than the
--     state holds (rolled back: an older snapshot, a failover that lost writes) -> hold.
--   * clock: the log's newest slot lies beyond now + far, or the fence ends beyond now + far +
--     grace, where far = hold, or LEGACY_HORIZON + longest period + margin while the newest
--     reservation may be the previous version's (`pushed` behind `seq`: its horizon is not in
--     `horizon`, and its slots are real), and for the fence, while it may be the previous
--     version's (`fenced` not it: a loss it proved holds for its own horizon). Neither can happen while Redis's clock only moves
--     forward (a slot is granted at most that far ahead, a fence lasts at most a hold or the
--     grace), so Redis's clock stepped back (a failover to a node whose clock is behind, an NTP
--     step) or the state was written by hand. Every time the state holds is then in doubt; the
--     slots it stands for were still granted at most that far ahead of the true now, so after
--     `far` from now none is in any window -> held for `far`, and the log is dropped (its `last`
--     with it: no 'lost' follows): after it, slots are granted as for a new log. Without this,
--     every slot lay behind the far entry, beyond the horizon, refused for as long as the step.
--     A pause (Pisano's Retry-After) is no evidence of a step and is kept, less what the step
--     is known to be (the last `beat` ahead of now): never shorter than Pisano asked for.
--     (A newest slot beyond the horizon but within hold is only waited out: that takes at most
--     about as long as the fence would, and a step of a few ms between two nodes' clocks is no
--     reason to hold the fleet.)
--   * doubt: no epoch and a caller that knows none (the first use, or a loss nobody alive
--     remembers yet), another Redis (restart, failover: acknowledged writes may be missing), or
--     no heartbeat for longer than the grace (an older snapshot restored, or a fleet back from
--     zero) -> grace. Every live replica, idle or busy, heartbeats within the grace with the
--     epoch and `seq` it knows; one that proves a loss turns the grace into a hold.
-- While fenced, nothing is reserved, even within the horizon: a slot granted during the grace
-- could fall inside a loss proven a moment later.
--
-- Slots are handed out first come, first served and never before an existing reservation, so
-- the log stays sorted and only the newest `limit` entries matter to each window: a new slot at
-- t is allowed by window (N, T) when the N-th newest entry is at or before t - T - margin.
local clock = redis.call('TIME')
local skew = tonumber(redis.call('HGET', KEYS[2], 'skew') or '0') or 0
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - skew
-- A forward step of Redis's clock, measured by the caller (see 'step' above): taken out at once.
local stepped = 0
local prev, elapsed, tolerance = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
if prev and elapsed and now - prev - elapsed > tolerance then
  stepped = now - prev - elapsed
  skew, now = skew + stepped, now - stepped
  redis.call('HSET', KEYS[2], 'skew', skew)
end
local margin, horizon, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local keep, longest = 1, 0
for i = 14, #ARGV, 2 do
  local limit, period = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if limit > keep then keep = limit end
  if period > longest then longest = period end
end
local reach = longest + margin

-- Which Redis holds the data: the replication id changes on every restart and on a failover.
-- A user that may not run INFO gets '' (only the heartbeat rule then catches those cases).
local server = ''
local info = redis.pcall('INFO', 'replication')
if type(info) == 'string' then
  server = string.match(info, 'master_replid:(%w+)') or ''
end

local state = redis.call('HMGET', KEYS[2], 'epoch', 'seq', 'fence_until', 'pause_until', 'beat', 'server',
                        'last', 'keep', 'keep_at', 'reach', 'reach_at', 'last_n', 'horizon', 'horizon_at',
                        'pushed', 'fenced')
local epoch, seq = state[1], tonumber(state[2] or '0')
local fence_until, pause_until = tonumber(state[3] or '0'), tonumber(state[4] or '0')
local beat, last_server = tonumber(state[5] or '0'), state[6] or ''
local last, last_n = tonumber(state[7] or ''), tonumber(state[12] or '') or 1

-- Does the log still end with the newest slot pushed, as many times as it was pushed? (A tail
-- newer than `last` was pushed by a version that kept no `last`: nothing to say.)
local function log_lacks_last()
  local tail = tonumber(redis.call('LINDEX', KEYS[1], -1) or '-1') or -1
  if tail ~= last then return tail < last end
  return tonumber(redis.call('LINDEX', KEYS[1], -last_n) or '-1') ~= last
end

-- What the widest live replica needs of the log (its entries count for it as long as it lives):
-- the larger of ours and the one stored, until the stored one has not been repeated for as long
-- as the log itself lives (every replica heartbeats each second).
local function widest(stored, at, own, lives)
  stored, at = tonumber(stored or ''), tonumber(at or '')
  if stored and at and stored > own and now - at <= lives then
    return stored, false
  end
  return own, true
end
local keep_mine, reach_mine, ahead, ahead_mine
local log_lives = (tonumber(state[10] or '') or 0) + horizon + 60000
keep, keep_mine = widest(state[8], state[9], keep, log_lives)
reach, reach_mine = widest(state[10], state[11], reach, log_lives)
-- the longest horizon: its slots may lie that far ahead of their grant, so it lives that long
ahead, ahead_mine = widest(state[13], state[14], horizon, (tonumber(state[13] or '') or 0) + 60000)
local hold = ahead + reach
-- The longest horizon any version grants slots at (ARGV[10]: THROTTLE_HORIZON_MS's bound, `check`
-- uses 60 s): the bound on a slot the previous version reserved, whose horizon it never recorded.
local LEGACY_HORIZON = tonumber(ARGV[10])
local legacy_far = math.max(ahead, LEGACY_HORIZON) + reach
local newest_logged = tonumber(redis.call('LINDEX', KEYS[1], -1) or '')
local far_log, far_fence = hold, hold
if newest_logged and tonumber(state[15] or '') ~= seq then far_log = legacy_far end
if fence_until > now and tonumber(state[16] or '') ~= fence_until then far_fence = legacy_far end
local caller_epoch, caller_seq = ARGV[1], tonumber(ARGV[2])
local event = ''
local function fence(until_ms, why)
  if until_ms > fence_until and until_ms > now then  -- a zero grace raises nothing
    fence_until = until_ms
    event = why  -- and `fenced` (this version's) when the state is written below
  end
end

-- Redis's clock stepped back (or the state was written by hand): see 'clock' above. Checked first,
-- so that a fence left far ahead is brought back before any other rule compares with it.
if (newest_logged and newest_logged > now + far_log) or fence_until > now + far_fence + grace then
  fence_until = 0
  fence(now + math.max(far_log, far_fence), 'clock')
  redis.call('DEL', KEYS[1])
  last = nil
  redis.call('HDEL', KEYS[2], 'last', 'last_n')
  redis.call('HSET', KEYS[2], 'pushed', seq)  -- an empty log holds no older version's slot
  -- a pause ends where it did, less the step the last beat shows (it was at most that long ago)
  if beat > now and pause_until > now then
    pause_until = math.max(now, pause_until - (beat - now))
    redis.call('HSET', KEYS[2], 'pause_until', pause_until)
  end
end

if not epoch then
  epoch, seq = tostring(now), 0
  redis.call('PERSIST', KEYS[2])  -- a meta hash left with a TTL by an older version
  if caller_epoch ~= '' then fence(now + hold, 'lost') else fence(now + grace, 'new') end
elseif caller_epoch ~= '' and caller_epoch ~= epoch then
  fence(now + hold, 'lost')
elseif caller_seq > seq then
  fence(now + hold, 'rolled_back')
  seq = caller_seq  -- reported once: replicas that know less do not raise it again
elseif last and last + reach > now and log_lacks_last() then
  -- the newest slots still count, and the log lacks them: the log alone was deleted or rolled back
  fence(now + hold, 'lost')
  last = nil  -- reported once
  redis.call('HDEL', KEYS[2], 'last', 'last_n')
elseif server ~= last_server or now - math.max(beat, fence_until) > grace then
  -- (measured from the fence's end too: a lone caller waiting out a fence raises no new one)
  fence(now + grace, 'doubt')
end
redis.call('HSET', KEYS[2], 'epoch', epoch, 'seq', seq, 'fence_until', fence_until, 'beat', now,
           'server', server)
if event ~= '' then redis.call('HSET', KEYS[2], 'fenced', fence_until) end
if keep_mine then redis.call('HSET', KEYS[2], 'keep', keep, 'keep_at', now) end
if reach_mine then redis.call('HSET', KEYS[2], 'reach', reach, 'reach_at', now) end
if ahead_mine then redis.call('HSET', KEYS[2], 'horizon', ahead, 'horizon_at', now) end

if ARGV[6] ~= '1' then
  return {2, math.max(0, fence_until - now), epoch, 0, seq, event, now, stepped, pause_until}
end
if fence_until > now then
  return {3, fence_until - now, epoch, fence_until, seq, event, now, stepped, pause_until}
end

local slot = now + tonumber(ARGV[9])
if pause_until > slot then slot = pause_until end
local length = redis.call('LLEN', KEYS[1])
local newest = nil
if length > 0 then
  newest = tonumber(redis.call('LINDEX', KEYS[1], -1))
  if newest > slot then slot = newest end
end
for i = 14, #ARGV, 2 do
  local limit, period = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if length >= limit then
    local nth = tonumber(redis.call('LINDEX', KEYS[1], -limit))
    if nth + period + margin > slot then slot = nth + period + margin end
  end
end

local pace, lead = tonumber(ARGV[7]), tonumber(ARGV[8])
if pace > 0 and newest and newest + pace > slot then
  if newest + pace - now > lead then
    return {4, newest + pace - now, epoch, newest + pace, seq, event, now, stepped, pause_until}
  end
  slot = newest + pace
end

local wait = slot - now
if wait > horizon then
  return {0, wait, epoch, slot, seq, event, now, stepped, pause_until}
end
redis.call('RPUSH', KEYS[1], slot)
redis.call('LTRIM', KEYS[1], -keep, -1)
-- An entry matters for one longest period after its slot; slots are at most `horizon` ahead.
redis.call('PEXPIRE', KEYS[1], reach + ahead + 60000)
if slot == last then last_n = math.min(last_n + 1, keep) else last_n = 1 end
redis.call('HSET', KEYS[2], 'last', slot, 'last_n', last_n)
seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('HSET', KEYS[2], 'pushed', seq)
return {1, wait, epoch, slot, seq, event, now, stepped, pause_until}
