"""The dedup store's contract: claim, settle, hold back, unknown fate, replays scoped to the
attempt an SRE checked (issue 11, finding 1)."""

from __future__ import annotations

import time

from consumer.sre.replay_signature import ATTEMPT_ID
from consumer.state.dedup import LEGACY_ATTEMPT, ClaimRequest, ClaimStatus, RedisDedup, Settlement
from consumer.state.dedup_layout import SLICES
from consumer.state.memory import _CLAIM, _Entry


def ids(*names: str, replay_of: str | None = None) -> list[ClaimRequest]:
    return [ClaimRequest(n, replay_of) for n in names]


def codes(statuses: list[ClaimStatus]) -> str:
    return "".join(s.value for s in statuses)


def test_delivered_ids_are_skipped_fleet_wide(make_dedup) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2)
    tag = a.new_tag()
    assert codes(a.claim(tag, ids("e1", "e2"))) == "CC"
    assert codes(b.claim(b.new_tag(), ids("e1", "e3"))) == "HC"  # in flight on a: held back, not skipped
    a.settle(Settlement.DELIVERED, tag, ["e1", "e2"])
    assert codes(b.claim(b.new_tag(), ids("e1", "e2"))) == "DD"


def test_states_peek_many_ids_in_order_as_state_does_and_claim_nothing(make_dedup) -> None:  # type: ignore[no-untyped-def]
    # The open token circuit's batch (consumer/delivery/sender.py `_short_circuit`): its delivered
    # ids end `skipped`, and looking must take none of them.
    a, b = make_dedup(2)
    tag = a.new_tag()
    names = [f"p{i}" for i in range(40)]
    a.claim(tag, ids(*names[:20]))
    a.settle(Settlement.DELIVERED, tag, names[:10])
    a.settle(Settlement.UNKNOWN, tag, names[10:15])
    assert b.states([]) == []
    peeked = b.states(names)
    assert peeked == [b.state(n) for n in names]
    assert peeked[:10] == ["d"] * 10 and peeked[20:] == [None] * 20
    assert all(v is not None and v.startswith("u|") for v in peeked[10:15])
    assert all(v is not None and v.startswith("c|") for v in peeked[15:20])
    assert codes(b.claim(b.new_tag(), ids(*names[20:]))) == "C" * 20  # the peek took nothing


def test_released_ids_can_be_sent_again(make_dedup) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2)
    tag = a.new_tag()
    a.claim(tag, ids("e1"))
    b.settle(Settlement.RELEASED, b.new_tag(), ["e1"])  # someone else's release does nothing
    assert codes(b.claim(b.new_tag(), ids("e1"))) == "H"
    a.settle(Settlement.RELEASED, tag, ["e1"])
    assert codes(b.claim(b.new_tag(), ids("e1"))) == "C"


def test_a_retried_claim_is_idempotent(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    tag = a.new_tag()
    assert codes(a.claim(tag, ids("e1"))) == "C"
    assert codes(a.claim(tag, ids("e1"))) == "C"  # the first reply was lost; the retry must not hold itself
    assert codes(a.claim(a.new_tag(), ids("e1"))) == "H"  # another request of the same replica: held


def test_expired_claim_is_unknown_and_only_a_replay_of_that_attempt_may_send_it(make_dedup) -> None:  # type: ignore[no-untyped-def]
    crashed, survivor = make_dedup(2, lease_ms=300)
    attempt = crashed.new_tag()
    crashed.claim(attempt, ids("e1"))  # then the process died before settling
    time.sleep(0.4)
    found = survivor.claim(survivor.new_tag(), ids("e1"))
    assert codes(found) == "U" and found.attempts == [attempt]  # what the ambiguous dead-letter names
    assert survivor.state("e1") == f"u|{attempt}"  # from now on unknown: its late owner cannot renew it
    assert codes(crashed.claim(attempt, ids("e1"))) == "U"
    assert codes(survivor.claim(survivor.new_tag(), ids("e1", replay_of="someone|else"))) == "U"
    assert codes(survivor.claim(survivor.new_tag(), ids("e1", replay_of=attempt))) == "C"


def test_two_copies_of_an_ambiguous_event_replayed_send_at_most_once(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """Finding 1: copy 1's replay times out again; copy 2, naming the attempt the SRE checked,
    must not override the new attempt's mark, which nobody checked."""
    (a,) = make_dedup()
    first = a.new_tag()
    a.claim(first, ids("e1"))
    a.settle(Settlement.UNKNOWN, first, ["e1"])  # read timeout: dead-lettered twice (two DLQ copies)
    copy1, copy2 = a.new_tag(), a.new_tag()
    assert codes(a.claim(copy1, ids("e1", replay_of=first))) == "C"
    assert codes(a.claim(copy2, ids("e1", replay_of=first))) == "H"  # copy 1 is in flight
    a.settle(Settlement.UNKNOWN, copy1, ["e1"])  # ...and its fate is unknown again
    again = a.claim(copy2, ids("e1", replay_of=first))
    assert codes(again) == "U" and again.attempts == [copy1]  # dead-lettered again, naming copy 1's attempt
    # Once the SRE checked copy 1's attempt, its own dead-letter may be replayed; delivered ends it.
    assert codes(a.claim(copy2, ids("e1", replay_of=copy1))) == "C"
    a.settle(Settlement.DELIVERED, copy2, ["e1"])
    assert codes(a.claim(a.new_tag(), ids("e1", replay_of=copy1))) == "D"


def test_a_released_replay_puts_back_the_unknown_mark_it_overrode(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """Found in review: a replay's request that certainly failed (retries exhausted, a send window
    closed, a phone in cooldown) released its claim, which deleted the id's mark: attempt X's
    unknown fate was forgotten, and a plain copy of the event was then claimed and sent."""
    (a,) = make_dedup()
    x = a.new_tag()
    a.claim(x, ids("e1", "e2"))
    a.settle(Settlement.UNKNOWN, x, ["e1", "e2"])
    replay = a.new_tag()
    assert codes(a.claim(replay, [ClaimRequest("e1", x), ClaimRequest("e3")])) == "CC"
    a.settle(Settlement.RELEASED, replay, ["e1", "e3"])
    assert a.state("e1") == f"u|{x}" and a.state("e3") is None
    plain = a.claim(a.new_tag(), ids("e1"))
    assert codes(plain) == "U" and plain.attempts == [x]
    assert codes(a.claim(a.new_tag(), ids("e1", replay_of=x))) == "C"  # the SRE may replay it again
    # Only the caller's own claim is released: another replay's live claim stays as it is.
    live = a.new_tag()
    assert codes(a.claim(live, ids("e2", replay_of=x))) == "C"
    a.settle(Settlement.RELEASED, a.new_tag(), ["e2"])
    assert str(a.state("e2")).startswith(f"c|{live}|")

def test_a_replay_of_another_reason_never_overrides_an_unknown_mark(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """Finding 1, variant: a duplicate dead-lettered with 13001 (no claim taken) and replayed after
    the token fix carries no attempt: its sibling's unknown mark stands."""
    (a,) = make_dedup()
    sibling = a.new_tag()
    a.claim(sibling, ids("e1"))
    a.settle(Settlement.UNKNOWN, sibling, ["e1"])
    replayed = a.claim(a.new_tag(), ids("e1", replay_of=None))
    assert codes(replayed) == "U" and replayed.attempts == [sibling]


def test_an_unknown_mark_from_before_attempts_were_named_is_attempt_dash(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    if isinstance(a, RedisDedup):
        a.client.set(a.keys.event("e1"), "u")
    else:
        a._marks["e1"] = _Entry("u", a.clock() + 60_000)
    found = a.claim(a.new_tag(), ids("e1"))
    assert codes(found) == "U" and found.attempts == [LEGACY_ATTEMPT]
    assert codes(a.claim(a.new_tag(), ids("e1", replay_of=LEGACY_ATTEMPT))) == "C"


def test_a_replay_never_sends_a_delivered_event(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    tag = a.new_tag()
    a.claim(tag, ids("e1"))
    a.settle(Settlement.DELIVERED, tag, ["e1"])
    assert codes(a.claim(a.new_tag(), ids("e1", replay_of=tag))) == "D"


def test_unknown_fate_is_kept_and_never_downgrades_delivered(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    tag = a.new_tag()
    a.claim(tag, ids("e1", "e2"))
    a.settle(Settlement.UNKNOWN, tag, ["e1"])
    a.settle(Settlement.DELIVERED, tag, ["e2"])
    a.settle(Settlement.UNKNOWN, tag, ["e2"])
    assert a.state("e1") == f"u|{tag}" and a.state("e2") == "d"
    assert codes(a.claim(a.new_tag(), ids("e1", "e2"))) == "UD"


def test_marks_are_kept_for_the_horizon_and_forgotten_within_one_slice_more(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """The granularity (dedup_layout.py): a mark lives between the horizon and the horizon plus
    one slice (horizon / SLICES). With a 1 s horizon: at least 1 s, at most 1 + 1/SLICES s."""
    (a,) = make_dedup(horizon_s=1)
    tag = a.new_tag()
    a.claim(tag, ids("e1"))
    a.settle(Settlement.DELIVERED, tag, ["e1"])
    written = time.monotonic()
    assert a.state("e1") == "d"
    time.sleep(max(0.0, written + 0.95 - time.monotonic()))
    assert a.state("e1") == "d"  # remembered for the whole horizon
    time.sleep(max(0.0, written + 1.0 + 1 / SLICES + 0.05 - time.monotonic()))
    assert a.state("e1") is None


def test_a_claim_takes_over_only_the_attempts_that_gave_the_id_up(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """A claim whose reply was lost, or whose release never landed, is this replica's own attempt
    that gave the id up unsent (`ClaimRequest.abandoned_by`): its claim, live or lapsed, is taken
    over, not waited for until its lease ends in an ambiguous dead-letter. Nobody else's is."""
    a, b = make_dedup(2, lease_ms=300)
    lost, other = a.new_tag(), b.new_tag()
    assert codes(a.claim(lost, ids("e1", "e2", "e3"))) == "CCC"  # the reply never arrived
    assert codes(b.claim(other, ids("e4"))) == "C"
    retry = a.new_tag()
    found = a.claim(retry, [ClaimRequest("e1", abandoned_by=(lost,)),
                            ClaimRequest("e2"),  # a copy that does not know the attempt: held
                            ClaimRequest("e4", abandoned_by=(lost,))])  # someone else's live claim: held
    assert codes(found) == "CHH"
    assert a.state("e1").startswith(f"c|{retry}|")
    a.settle(Settlement.RELEASED, lost, ["e1"])  # the lost attempt's release, landing late: nothing
    assert a.state("e1").startswith(f"c|{retry}|")
    time.sleep(0.4)  # e3's claim lapses (e2's becomes unknown when found)
    assert codes(a.claim(a.new_tag(), ids("e2"))) == "U"
    later = a.new_tag()
    assert codes(a.claim(later, [ClaimRequest("e3", abandoned_by=("x|y", lost)),
                                 ClaimRequest("e2", abandoned_by=(lost,))])) == "CC"
    a.settle(Settlement.DELIVERED, later, ["e3", "e2"])
    assert codes(a.claim(a.new_tag(), [ClaimRequest("e3", abandoned_by=(later,))])) == "D"  # never a delivered mark


def test_a_takeover_of_a_replay_keeps_its_scope(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """A replay's claim taken over and then released puts back the unknown mark it replays."""
    (a,) = make_dedup()
    first = a.new_tag()
    a.claim(first, ids("e1"))
    a.settle(Settlement.UNKNOWN, first, ["e1"])
    lost = a.new_tag()
    assert codes(a.claim(lost, ids("e1", replay_of=first))) == "C"
    retry = a.new_tag()
    assert codes(a.claim(retry, [ClaimRequest("e1", first, (lost,))])) == "C"
    a.settle(Settlement.RELEASED, retry, ["e1"])
    assert a.state("e1") == f"u|{first}"


def test_a_released_replay_puts_back_only_a_mark_that_was_there(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """Found in review: the release of a replay's claim wrote `u|<replayed attempt>` whether or
    not the claim had overridden that mark. An id with no mark (the original attempt released it,
    or never claimed it) then ended up unknown, and a plain copy (a producer's duplicate, a second
    replay without a signature) was dead-lettered as ambiguous instead of sent."""
    (a,) = make_dedup()
    x = a.new_tag()
    a.claim(x, ids("e1", "e2"))
    a.settle(Settlement.UNKNOWN, x, ["e1"])  # e1 left unknown by attempt x
    a.settle(Settlement.RELEASED, x, ["e2"])  # e2 certainly not sent: no mark
    replay = a.new_tag()
    # e3 was never claimed at all (a dead-letter naming x for an id x never held)
    assert codes(a.claim(replay, ids("e1", "e2", "e3", replay_of=x))) == "CCC"
    a.settle(Settlement.RELEASED, replay, ["e1", "e2", "e3"])
    assert a.state("e1") == f"u|{x}"  # overridden: put back, its fate is still unknown
    assert a.state("e2") is None and a.state("e3") is None  # nothing overridden: nothing written
    plain = a.claim(a.new_tag(), ids("e1", "e2", "e3"))
    assert codes(plain) == "UCC" and plain.attempts == [x, "", ""]


def test_a_released_replay_of_an_expired_mark_writes_none(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """The unknown mark lapsed with the horizon before the replay came: the replay's claim
    overrode nothing, so its release leaves the id free."""
    (a,) = make_dedup(horizon_s=1)
    x = a.new_tag()
    a.claim(x, ids("e1"))
    a.settle(Settlement.UNKNOWN, x, ["e1"])
    written = time.monotonic()
    time.sleep(max(0.0, written + 1.0 + 1 / SLICES + 0.05 - time.monotonic()))
    assert a.state("e1") is None
    replay = a.new_tag()
    assert codes(a.claim(replay, ids("e1", replay_of=x))) == "C"
    a.settle(Settlement.RELEASED, replay, ["e1"])
    assert a.state("e1") is None
    assert codes(a.claim(a.new_tag(), ids("e1"))) == "C"


def test_what_a_claim_replaced_survives_its_retry_and_its_takeover(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """The replaced mark is kept in the claim itself: a retry after a lost reply or a renewal finds
    its own claim (not the mark), a takeover finds the given-up claim; each carries it on, for the
    ids that had a mark and for none other."""
    (a,) = make_dedup()
    x = a.new_tag()
    a.claim(x, ids("e1", "e2"))
    a.settle(Settlement.UNKNOWN, x, ["e1"])
    a.settle(Settlement.RELEASED, x, ["e2"])
    lost = a.new_tag()
    assert codes(a.claim(lost, ids("e1", "e2", replay_of=x))) == "CC"
    assert codes(a.claim(lost, ids("e1", "e2", replay_of=x))) == "CC"  # the reply was lost: asked again
    retry = a.new_tag()
    assert codes(a.claim(retry, [ClaimRequest(i, x, (lost,)) for i in ("e1", "e2")])) == "CC"
    assert codes(a.claim(retry, [ClaimRequest(i, x, (lost,)) for i in ("e1", "e2")])) == "CC"  # renewed
    a.settle(Settlement.RELEASED, retry, ["e1", "e2"])
    assert a.state("e1") == f"u|{x}" and a.state("e2") is None


def test_a_lapsed_replay_claim_names_its_own_attempt(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """A replay's claim past its lease is unknown under the replay's attempt (what it replaced is
    not part of the name); a replay of that attempt overrides it and, released, puts it back."""
    crashed, survivor = make_dedup(2, lease_ms=300)
    x = crashed.new_tag()
    crashed.claim(x, ids("e1"))
    crashed.settle(Settlement.UNKNOWN, x, ["e1"])
    replay = crashed.new_tag()
    assert codes(crashed.claim(replay, ids("e1", replay_of=x))) == "C"
    assert survivor.claim(survivor.new_tag(), ids("e1")).attempts == [""]  # live: held back
    time.sleep(0.4)  # the replica died with its request in flight
    found = survivor.claim(survivor.new_tag(), ids("e1"))
    assert codes(found) == "U" and found.attempts == [replay]
    assert survivor.state("e1") == f"u|{replay}"
    second = survivor.new_tag()
    assert codes(survivor.claim(second, ids("e1", replay_of=replay))) == "C"
    survivor.settle(Settlement.RELEASED, second, ["e1"])
    assert survivor.state("e1") == f"u|{replay}"


def test_a_recorded_claim_reads_right_on_a_replica_of_the_former_build(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """A rolling upgrade runs both builds together. The former one parses a claim with
    '^c|(.*)|(%d+)$' (memory's `_CLAIM`): a recorded claim still ends in its time, so it holds it
    within its lease; past it, it names the attempt `<owner>|<nonce>|u|<attempt>` and writes that
    mark. This build reads such a mark as the claim's own attempt (review: the longer name is no
    attempt id a dead-letter can carry), and a replay naming that overrides it (also read from
    0.2.0's key: the old read path too)."""
    (a,) = make_dedup()
    x, replay = a.new_tag(), a.new_tag()
    misnamed = f"{replay}|u|{x}"  # as the former build names the claim below once lapsed
    # Written as a 0.2.0 mark (read where no slice holds the id), before the layout exists
    if isinstance(a, RedisDedup):
        a.client.set(a.keys.event("e2"), f"u|{misnamed}")
    else:
        a._marks["e2"] = _Entry(f"u|{misnamed}", a.clock() + 60_000)
    a.claim(x, ids("e1"))
    a.settle(Settlement.UNKNOWN, x, ["e1"])
    before = int(time.time() * 1000)
    a.claim(replay, ids("e1", replay_of=x))
    recorded = a.state("e1")
    assert recorded.startswith(f"c|{replay}|u|{x}|")
    old = _CLAIM.fullmatch(recorded)
    assert old and abs(int(old.group(2)) - before) < 5_000
    found = a.claim(a.new_tag(), ids("e2"))
    assert codes(found) == "U" and found.attempts == [replay]
    again = a.new_tag()
    assert codes(a.claim(again, ids("e2", replay_of=replay))) == "C"
    a.settle(Settlement.RELEASED, again, ["e2"])
    assert a.state("e2") == f"u|{replay}"


def test_a_claim_the_former_build_lapsed_is_unknown_under_the_claim_attempt(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """Found in review: a replica of the former build lapses a recorded claim `c|<R>|u|<X>|<ms>`
    into `u|<R>|u|<X>` (its '^c|(.*)|(%d+)$' takes the record into the name: seen running its
    scripts, e3a6d14, against this build's values). This build read that mark as attempt
    `<R>|u|<X>`: a copy's ambiguous dead-letter carried it as dlq.attempt.id, which is no attempt id
    (`ATTEMPT_ID`), so the replay tool refused the record as malformed and could never replay it;
    and the replica that gave R up could not take the mark over. The unknown fate is R's request's,
    as when this build lapses the same claim (`u|<R>`)."""
    (a,) = make_dedup()
    x, replay = a.new_tag(), a.new_tag()
    lapsed = f"{replay}|u|{x}"
    a.settle(Settlement.UNKNOWN, lapsed, ["e1", "e2", "e3"])  # the very mark the former build writes
    assert a.state("e1") == f"u|{lapsed}"
    found = a.claim(a.new_tag(), ids("e1", "e2", "e3"))
    assert codes(found) == "UUU" and found.attempts == [replay] * 3
    assert ATTEMPT_ID.fullmatch(found.attempts[0])
    again = a.new_tag()  # a signed replay of that dead-letter
    assert codes(a.claim(again, ids("e1", replay_of=replay))) == "C"
    a.settle(Settlement.RELEASED, again, ["e1"])
    assert a.state("e1") == f"u|{replay}"
    takeover = a.new_tag()  # R's own replica, which gave R's claim up unsent
    assert codes(a.claim(takeover, [ClaimRequest("e2", x, (replay,)), ClaimRequest("e3", None, (replay,))])) == "CC"
    a.settle(Settlement.RELEASED, takeover, ["e2", "e3"])
    assert a.state("e2") == f"u|{x}" and a.state("e3") is None


def test_records_land_on_their_own_ids_across_many_buckets(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """Review probe (held): each bucket's call numbers its ids from 1, and a cluster sends one call
    per bucket: a record (or its absence) must land on the id whose mark the claim replaced, for
    replays mixed with plain copies, renewed, then released."""
    (a,) = make_dedup()
    x, replay = a.new_tag(), a.new_tag()
    names = [f"e{i}" for i in range(600)]
    a.claim(x, ids(*names))
    a.settle(Settlement.UNKNOWN, x, names[::2])  # even: unknown under x; odd: free
    a.settle(Settlement.RELEASED, x, names[1::2])
    requests = [ClaimRequest(n, x if i % 3 else None) for i, n in enumerate(names)]  # every third plain
    got = a.claim(replay, requests)
    assert codes(got) == "".join("U" if i % 6 == 0 else "C" for i in range(600))
    assert codes(a.claim(replay, requests)) == codes(got)  # renewed
    a.settle(Settlement.RELEASED, replay, [n for n, s in zip(names, got, strict=True) if s is ClaimStatus.CLAIMED])
    assert [a.state(n) for n in names] == [f"u|{x}" if i % 2 == 0 else None for i in range(600)]
