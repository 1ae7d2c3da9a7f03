"""A settlement takes its claim's bucket groups (consumer/state/dedup.py, `RecentClaims`) only for
the very ids the claim grouped, in the same order; anything else is grouped afresh, and what is
kept stays bounded."""

from __future__ import annotations

from consumer.state.dedup import ClaimRequest, ClaimRequests, RecentClaims, _columns
from consumer.state.dedup_layout import Rows


def groups(*ids: str) -> list[tuple[str, Rows]]:
    return [("{b0}", Rows(list(range(len(ids))), [i.encode() for i in ids]))]


def test_a_settlement_of_the_claimed_ids_takes_the_claims_groups_once() -> None:
    recent = RecentClaims()
    ids = ["a", "b", "c"]
    made = groups(*ids)
    recent.keep("t1", ids, made)
    ids.append("d")  # the caller's list changing later does not change what was kept
    assert recent.take("t1", ["a", "b", "c"]) is made
    assert recent.take("t1", ["a", "b", "c"]) is None  # taken: a second settlement groups afresh


def test_other_ids_or_another_order_or_another_tag_are_grouped_afresh() -> None:
    recent = RecentClaims()
    for other in (["a", "b"], ["b", "a", "c"], ["a", "b", "c", "d"], []):
        recent.keep("t1", ["a", "b", "c"], groups("a", "b", "c"))
        assert recent.take("t1", other) is None
    recent.keep("t1", ["a", "b", "c"], groups("a", "b", "c"))
    assert recent.take("t2", ["a", "b", "c"]) is None
    assert recent.take("t1", ("a", "b", "c")) is not None  # any sequence of the same ids


def test_a_renewal_replaces_the_tags_groups_and_old_claims_are_forgotten() -> None:
    recent = RecentClaims(limit=3)
    recent.keep("t0", ["x"], groups("x"))
    renewed = groups("x")
    recent.keep("t0", ["x"], renewed)  # the same tag again (a renewal): one entry, the newest
    for n in range(1, 4):
        recent.keep(f"t{n}", ["x"], groups("x"))
    assert recent.take("t0", ["x"]) is None  # the oldest of four, with room for three
    assert all(recent.take(f"t{n}", ["x"]) is not None for n in range(1, 4))


def test_claim_requests_as_columns_read_like_a_sequence_of_requests() -> None:
    plain = ClaimRequests(["a", "b"], [None, None])
    assert plain.replays is None and list(plain) == [ClaimRequest("a"), ClaimRequest("b")]
    assert plain[1] == ClaimRequest("b") and len(plain) == 2
    mixed = ClaimRequests(["a", "b", "c"], [None, "att-1", None])
    assert list(mixed) == [ClaimRequest("a"), ClaimRequest("b", "att-1"), ClaimRequest("c")]
    assert list(mixed[1:]) == [ClaimRequest("b", "att-1"), ClaimRequest("c")]
    assert _columns(mixed) is mixed
    columns = _columns([ClaimRequest("a"), ClaimRequest("b", "att-2")])
    assert (columns.event_ids, columns.replays, columns.abandoned) == (["a", "b"], [None, "att-2"], None)
    columns = _columns([ClaimRequest("a")])
    assert (columns.replays, columns.abandoned) == (None, None)
    given_up = ClaimRequests(["a", "b"], None, [(), ("t|1", "t|2")])
    assert list(given_up) == [ClaimRequest("a"), ClaimRequest("b", None, ("t|1", "t|2"))]
    assert given_up[1:][0] == ClaimRequest("b", None, ("t|1", "t|2"))
    assert _columns(list(given_up)).abandoned == [(), ("t|1", "t|2")]
