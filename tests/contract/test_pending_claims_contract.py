"""Pending claims (lua/claim.lua, "Values"): a claim no request that may have reached Pisano has
left under yet lapses into what it replaced, not into an unknown fate. A replica killed while its
claims wait for a far slot or a retry's backoff left them to lapse, and every event of theirs was
dead-lettered `ambiguous` though nothing had been sent: the customer's survey waited for an SRE's
replay. Armed claims (the renewal just before a POST) lapse into unknown as before."""

from __future__ import annotations

import re
import time

from consumer.state.arming import Arming
from consumer.state.cooldown import PhoneFate
from consumer.state.dedup import ClaimRequest, ClaimStatus, RedisDedup, Settlement
from tests.contract.test_cooldown_contract import DAY, key, phones
from tests.contract.test_cooldown_contract import codes as codes_of


def ids(*names: str, replay_of: str | None = None) -> list[ClaimRequest]:
    return [ClaimRequest(n, replay_of) for n in names]


def codes(statuses: list[ClaimStatus]) -> str:
    return "".join(s.value for s in statuses)


def test_a_lapsed_pending_claim_is_free_for_the_next_replica(make_dedup) -> None:  # type: ignore[no-untyped-def]
    crashed, survivor = make_dedup(2, lease_ms=300)
    early = crashed.new_tag()
    assert codes(crashed.claim(early, ids("e1", "e2"), Arming.PENDING)) == "CC"
    assert codes(survivor.claim(survivor.new_tag(), ids("e1"))) == "H"  # live: held back as any claim
    time.sleep(0.4)  # the replica died while its claims waited for their slot
    tag = survivor.new_tag()
    assert codes(survivor.claim(tag, ids("e1", "e2"))) == "CC"
    assert str(survivor.state("e1")).startswith(f"c|{tag}|")
    # ...and its late owner, woken, finds them gone: never sent under its claim
    assert codes(crashed.claim(early, ids("e1"), Arming.ARM)) == "H"


def test_the_renewal_before_a_post_arms_a_pending_claim(make_dedup) -> None:  # type: ignore[no-untyped-def]
    crashed, survivor = make_dedup(2, lease_ms=300)
    attempt = crashed.new_tag()
    crashed.claim(attempt, ids("e1", "e2"), Arming.PENDING)
    assert codes(crashed.claim(attempt, ids("e1"), Arming.ARM)) == "C"  # e1 goes in the POST
    time.sleep(0.4)  # killed with the POST in flight
    found = survivor.claim(survivor.new_tag(), ids("e1", "e2"))
    assert codes(found) == "UC" and found.attempts == [attempt, ""]
    assert survivor.state("e1") == f"u|{attempt}"


def test_a_heartbeat_keeps_each_claim_as_it_is(make_dedup) -> None:  # type: ignore[no-untyped-def]
    crashed, survivor = make_dedup(2, lease_ms=300)
    attempt = crashed.new_tag()
    crashed.claim(attempt, ids("e1"), Arming.ARM)
    crashed.claim(attempt, ids("e2"), Arming.PENDING)
    assert codes(crashed.claim(attempt, ids("e1", "e2"), Arming.KEEP)) == "CC"
    assert codes(crashed.claim(attempt, ids("e3"), Arming.KEEP)) == "C"  # one it takes anew: armed
    time.sleep(0.4)
    found = survivor.claim(survivor.new_tag(), ids("e1", "e2", "e3"))
    assert codes(found) == "UCU" and found.attempts == [attempt, "", attempt]


def test_an_attempt_that_certainly_failed_disarms_its_claims(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """A 503 from Pisano itself: the retry waits a backoff, then a far slot. Killed there, the
    claims lapse; nothing under them reached Pisano, so the next replica sends the events."""
    crashed, survivor = make_dedup(2, lease_ms=300)
    attempt = crashed.new_tag()
    crashed.claim(attempt, ids("e1"), Arming.ARM)
    assert codes(crashed.claim(attempt, ids("e1"), Arming.PENDING)) == "C"
    time.sleep(0.4)
    assert codes(survivor.claim(survivor.new_tag(), ids("e1"))) == "C"


def test_a_lapsed_pending_replay_claim_leaves_the_mark_it_replaced(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """A signed replay's claim over attempt X's unknown mark, pending, lapses: X's fate is still
    unknown (only another replay of X may override it), never free for a plain copy."""
    a, b = make_dedup(2, lease_ms=300)
    x = a.new_tag()
    a.claim(x, ids("e1", "e2"))
    a.settle(Settlement.UNKNOWN, x, ["e1", "e2"])
    replay = a.new_tag()
    assert codes(a.claim(replay, ids("e1", "e2", replay_of=x), Arming.PENDING)) == "CC"
    time.sleep(0.4)
    plain = b.claim(b.new_tag(), ids("e1"))
    assert codes(plain) == "U" and plain.attempts == [x]
    assert b.state("e1") == f"u|{x}"
    again = b.new_tag()
    assert codes(b.claim(again, ids("e2", replay_of=x))) == "C"  # the SRE's replay may still go
    b.settle(Settlement.RELEASED, again, ["e2"])
    assert b.state("e2") == f"u|{x}"


def test_a_pending_claim_is_released_and_settled_as_any_claim(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    x = a.new_tag()
    a.claim(x, ids("e1"))
    a.settle(Settlement.UNKNOWN, x, ["e1"])
    replay, plain = a.new_tag(), a.new_tag()
    a.claim(replay, ids("e1", replay_of=x), Arming.PENDING)
    a.claim(plain, ids("e2", "e3"), Arming.PENDING)
    a.settle(Settlement.RELEASED, replay, ["e1"])
    a.settle(Settlement.RELEASED, plain, ["e2"])
    a.settle(Settlement.DELIVERED, plain, ["e3"])
    assert (a.state("e1"), a.state("e2"), a.state("e3")) == (f"u|{x}", None, "d")


# The two patterns a build before pending claims parses a claim with (its lua/claim.lua
# parse_claim): a fleet mid-upgrade runs both builds on one Redis.
_FORMER_PARSE = """
local value = ARGV[1]
local owner, over, at = string.match(value, '^c|(.-)|u|(.*)|(%d+)$')
if not owner then owner, at = string.match(value, '^c|(.*)|(%d+)$') end
return {owner or false, over or false, tostring(tonumber(at))}
"""
_FORMER_OVER = re.compile(r"c\|(.*?)\|u\|(.*)\|([0-9]+)", re.S)
_FORMER = re.compile(r"c\|(.*)\|([0-9]+)", re.S)


def _former_build_reads(store: object, value: str) -> tuple[str | None, str | None, int]:
    if isinstance(store, RedisDedup):
        owner, over, at = store.client.eval(_FORMER_PARSE, 0, value)
        text = [v.decode() if isinstance(v, bytes) else v for v in (owner, over, at)]
        return text[0] or None, text[1] or None, int(text[2])
    match = _FORMER_OVER.fullmatch(value)
    if match:
        return match.group(1), match.group(2), int(match.group(3))
    match = _FORMER.fullmatch(value)
    assert match is not None
    return match.group(1), None, int(match.group(2))


def test_a_build_before_pending_claims_reads_one_as_an_ordinary_claim(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """Mid-upgrade, a replica of the former build finds this build's pending claims: it must read
    the same attempt (a tag its dead-letters and the replay tool accept) and the same time, so it
    holds them for their lease and then counts them unknown under that attempt, as before."""
    (a,) = make_dedup()
    x, replay, plain = a.new_tag(), a.new_tag(), a.new_tag()
    a.claim(x, ids("e1"))
    a.settle(Settlement.UNKNOWN, x, ["e1"])
    before = int(time.time() * 1000)
    a.claim(plain, ids("e2"), Arming.PENDING)
    a.claim(replay, ids("e1", replay_of=x), Arming.PENDING)
    for event_id, (tag, over) in {"e2": (plain, None), "e1": (replay, x)}.items():
        value = str(a.state(event_id))
        owner, replaced, at = _former_build_reads(a, value)
        assert (owner, replaced) == (tag, over), value
        assert abs(at - before) < 5_000, value


# ---------------------------------------------------------------- the contact cooldown's reservations

def test_a_lapsed_pending_reservation_is_no_contact(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    """Its request never left: counted as a contact, the event read again would end `cooldown`
    and the customer get no survey."""
    crashed, survivor = make_cooldown(2, lease_ms=300)
    assert codes_of(crashed.reserve("a|1", phones(1, 2, 3), window_ms=DAY, arming=Arming.PENDING)) == "RRR"
    assert codes_of(survivor.reserve("b|1", phones(1), window_ms=DAY)) == "H"
    assert codes_of(crashed.reserve("a|1", phones(2), window_ms=DAY, arming=Arming.ARM)) == "R"  # in a POST
    assert codes_of(crashed.reserve("a|1", phones(3), window_ms=DAY, arming=Arming.KEEP)) == "R"  # a heartbeat
    time.sleep(0.4)
    assert codes_of(survivor.reserve("b|2", phones(1, 2, 3), window_ms=DAY)) == "RCR"


def test_a_lapsed_pending_reservation_leaves_the_contact_it_covered(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_cooldown(lease_ms=300)
    a.reserve("a|1", phones(1, 2), window_ms=DAY)
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(1)])
    a.settle(PhoneFate.UNKNOWN, "a|1", [key(2)])
    # a campaign with a short window reserves over the contact (kept after '#'), pending
    time.sleep(0.05)
    assert codes_of(a.reserve("b|1", phones(1, 2), window_ms=10, arming=Arming.PENDING)) == "RR"
    time.sleep(0.4)
    assert codes_of(a.reserve("c|1", phones(1, 2), window_ms=DAY)) == "CC"  # both contacts still count
    assert codes_of(a.reserve("d|1", phones(2), window_ms=DAY, arming=Arming.PENDING)) == "C"


def test_a_disarmed_reservation_lapses_free(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    crashed, survivor = make_cooldown(2, lease_ms=300)
    crashed.reserve("a|1", phones(1), window_ms=DAY, arming=Arming.ARM)
    assert codes_of(crashed.reserve("a|1", phones(1), window_ms=DAY, arming=Arming.PENDING)) == "R"
    time.sleep(0.4)
    assert codes_of(survivor.reserve("b|1", phones(1), window_ms=DAY)) == "R"
