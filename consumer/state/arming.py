"""What a claim says of the requests under it: armed or pending (ARCHITECTURE.md, invariant 2).

A replica killed while it holds claims leaves them to lapse. An armed claim lapses into "fate
unknown": a request under it may have reached Pisano, so its events are dead-lettered `ambiguous`
and wait for an SRE. A pending claim lapses into what it replaced (nothing, or an earlier attempt's
unknown mark): no request under it that may have reached Pisano has left, so whoever reads the
event next simply sends it. Claims are pending while a retry waits (its backoff, its new slot,
however far) after an attempt that certainly failed (consumer/delivery/attempts.py, `disarm`), and
while bisection sends the parts of a request Pisano refused for a recipient one at a time
(consumer/delivery/sender.py, `_conclude`); the renewal just before each POST arms its own, in
the same script call, so no POST leaves under a pending claim. A batch's first claims are taken
armed, for their slot: that POST may follow them without a renewal (`SlotReserver.ready`'s
`fresh`), so a claim taken pending must never count as fresh. A marking whose reply never came
back may land later than the next arming, so its request is not sent again under those claims
(`Claim.disarm`). The dedup claims (lua/claim.lua) and the contact cooldown's phone reservations
(lua/reserve_phones.lua) follow the same rule.

A renewal, a disarm and a beat run in the renewal mode (`script_argument`): they renew the
caller's own claims and take nothing else. One whose reply was lost is not cancelled and may land
after its request released the ids; had it taken them again, another replica's copy of the event
would have waited a lease for a claim under which nothing is sent, then (armed) dead-lettered it
`ambiguous`. Only a batch's first claim (and that call run again after a lost reply) takes an id.
"""

from __future__ import annotations

import enum


class Arming(enum.Enum):
    """What a claim says of the requests under it (lua/claim.lua, "Values"). Lapsed, an armed claim
    is unknown (its request may have reached Pisano); a pending one is free again (none has left
    that may have), so the event is sent by whoever reads it next instead of dead-lettered."""

    ARM = "a"  # a request may leave from now on: the renewal just before a POST, or a claim taken for its slot
    PENDING = "p"  # none has left that may have reached Pisano: after an attempt that certainly failed
    KEEP = "k"  # each own claim as it is (a heartbeat's renewal); a claim it takes anew is armed


def script_argument(arming: Arming, renewal: bool) -> str:
    """The scripts' arming argument: the renewal mode adds an 'r' (lua/claim.lua, ARGV[9]): an id
    that is not the caller's own claim is answered lost and left as it is."""
    return arming.value + "r" if renewal else arming.value
