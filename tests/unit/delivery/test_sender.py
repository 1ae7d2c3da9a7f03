"""The sender on in-memory fakes: every path ends each event in exactly one outcome, leaves no
claim behind, and never sends an event twice."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, PisanoTransportError, StateStoreError
from consumer.state.dedup import Settlement
from tests.support.fakes import CAMPAIGN, FakePisano, event, intercept_claims, rig, windows_limiter

OK = Accepted(200, "req", 0.01)


def unavailable() -> PisanoApiError:
    return PisanoApiError(503, None, "Service Unavailable")


def bad_phone_refusal(bad: set[str]):  # type: ignore[no-untyped-def]
    """Pisano refuses a whole request (13028) if it holds any of `bad`."""
    return lambda phones: PisanoApiError(422, 13028, "Invalid parameters") if bad & set(phones) else OK


def assert_one_outcome_each(r, n: int) -> None:  # type: ignore[no-untyped-def]
    kinds = r.kinds()
    assert len(kinds) == n and all(len(k) == 1 for k in kinds.values()), kinds
    assert r.outcome_count() == n
    assert not [i for i in kinds if (r.dedup.state(i) or "").startswith("c|")], "a claim was left behind"


def test_a_batch_is_delivered_in_one_request() -> None:
    r = rig()
    r.process([event(i) for i in range(5)])
    assert len(r.pisano.requests) == 1
    assert {k for ks in r.kinds().values() for k in ks} == {"delivered"}
    assert all(r.dedup.state(f"e{i}") == "d" for i in range(5))
    assert_one_outcome_each(r, 5)


def test_delivered_ids_are_skipped_held_ones_requeued_unknown_ones_dead_lettered() -> None:
    r = rig()
    other = r.dedup.replica()
    tag = other.new_tag()
    from consumer.state.dedup import ClaimRequest

    other.claim(tag, [ClaimRequest("e0"), ClaimRequest("e1"), ClaimRequest("e2")])
    other.settle(Settlement.DELIVERED, tag, ["e0"])
    other.settle(Settlement.UNKNOWN, tag, ["e2"])  # e1 stays claimed by the other replica
    r.process([event(i) for i in range(4)])
    assert r.kinds() == {"e0": {"skipped"}, "e1": {"requeue"}, "e2": {"dead_letter"}, "e3": {"delivered"}}
    assert r.reasons() == {"e2": "ambiguous"}
    assert r.attempts() == {"e2": tag}  # the attempt whose mark stands: the only one a replay may override
    assert r.pisano.sent_phones == [event(3).recipient.phone]


def test_retriable_answers_are_retried_then_delivered() -> None:
    r = rig(FakePisano([unavailable(), PisanoTransportError("refused", ambiguous=False), OK]))
    r.process([event(1)])
    assert len(r.pisano.requests) == 3 and r.kinds() == {"e1": {"delivered"}}


def test_each_request_answered_line_carries_its_own_attempts_status(caplog: pytest.LogCaptureFixture) -> None:
    """Found by the chaos run: a request accepted after a 503 was logged `request answered: HTTP
    200` with `status` 503, the earlier attempt's (the request's record of its last error stayed
    set after a later attempt was answered)."""
    r = rig(FakePisano([unavailable(), PisanoApiError(429, None, "Too Many Requests"), OK]))
    with caplog.at_level(logging.INFO, logger="consumer.delivery.attempts"):
        r.process([event(1)])
    answered = [(rec.getMessage(), rec.__dict__.get("status"), rec.__dict__.get("attempt"))
                for rec in caplog.records if rec.getMessage().startswith("request answered")]
    assert [(status, attempt) for _, status, attempt in answered] == [(503, 1), (429, 2), (None, 3)]
    assert answered[-1][0] == "request answered: HTTP 200"
    assert r.kinds() == {"e1": {"delivered"}}


def test_retries_exhausted_are_dead_lettered_and_released() -> None:
    r = rig(FakePisano(default=unavailable()), max_attempts=3)
    r.process([event(1), event(2)])
    assert len(r.pisano.requests) == 3
    assert r.reasons() == {"e1": "retries_exhausted", "e2": "retries_exhausted"}
    assert r.dedup.state("e1") is None  # certainly failed: free to be replayed
    assert_one_outcome_each(r, 2)


def test_a_429_pauses_the_shared_throttle() -> None:
    limiter = windows_limiter("100/1s")
    r = rig(FakePisano([PisanoApiError(429, None, "Too many", retry_after_s=0.01), OK]), limiter=limiter)
    r.process([event(1)])
    assert r.kinds() == {"e1": {"delivered"}}
    assert limiter.state.data.pause_until > 0


@pytest.mark.parametrize(("policy", "kind", "mark"), [
    ("dead_letter", "dead_letter", "u"), ("assume_delivered", "delivered", "d"), ("resend", "requeue", None)])
def test_an_ambiguous_answer_follows_the_policy(policy: str, kind: str, mark: str | None) -> None:
    r = rig(FakePisano([PisanoTransportError("read timeout", ambiguous=True)]), ambiguous=policy)
    r.process([event(1)])
    assert len(r.pisano.requests) == 1  # never retried on its own
    assert r.kinds() == {"e1": {kind}}
    assert r.dedup.state("e1") == (r.unknown_mark("e1") if mark == "u" else mark)


def test_a_wrong_token_opens_the_circuit_and_dead_letters_with_the_code() -> None:
    r = rig(FakePisano([PisanoApiError(401, 13001, "Wrong token")]))
    r.process([event(1), event(2)])
    assert r.reasons() == {"e1": "pisano_error", "e2": "pisano_error"}
    state, trip = r.sender.destination.circuit.state()
    assert state == "open" and trip is not None and trip.code == 13001
    assert r.dedup.state("e1") is None


def test_the_circuit_open_dead_letters_without_a_request() -> None:
    r = rig(FakePisano([PisanoApiError(401, 13001, "Wrong token")]))
    r.process([event(1)])
    r.batcher.add([event(2)])
    r.batcher.flush_all()
    assert r.sender._short_circuit()
    assert len(r.pisano.requests) == 1 and r.reasons()["e2"] == "pisano_error"


def test_a_request_refused_as_a_whole_is_dead_lettered_without_splitting() -> None:
    r = rig(FakePisano([PisanoApiError(404, 13002, "Campaign not found")]))
    r.process([event(i) for i in range(8)])
    assert len(r.pisano.requests) == 1 and set(r.reasons().values()) == {"pisano_error"}
    assert_one_outcome_each(r, 8)


def test_bisection_finds_the_bad_recipients_and_delivers_the_rest() -> None:
    bad = {event(3).recipient.phone, event(12).recipient.phone}
    r = rig(FakePisano(default=bad_phone_refusal(bad)))
    r.process([event(i) for i in range(16)])
    assert r.reasons() == {"e3": "pisano_error", "e12": "pisano_error"}
    delivered = [p for request in r.pisano.requests if not bad & set(request) for p in request]
    assert sorted(delivered) == sorted({event(i).recipient.phone for i in range(16)} - bad)
    assert len(delivered) == len(set(delivered)), "a recipient was delivered twice"
    assert len(r.pisano.requests) <= 1 + 2 * 2 * 4
    assert_one_outcome_each(r, 16)


def test_bisection_stops_at_its_budget_and_dead_letters_the_rest_unisolated() -> None:
    bad = {event(i).recipient.phone for i in range(0, 64, 3)}
    r = rig(FakePisano(default=bad_phone_refusal(bad)), limiter=windows_limiter("1000/1s,8/100s"),
            isolation_share=0.25)
    r.process([event(i) for i in range(64)])
    assert len(r.pisano.requests) == 1 + 2  # 25% of the longest window's 8
    messages = {o.failure.message for o in r.outcomes if o.failure}
    assert any("not isolated" in m for m in messages)
    assert_one_outcome_each(r, 64)


# ---------------------------------------------------------------- exceptions at every step


class Boom(Exception):
    pass


def test_an_exception_while_claiming_dead_letters_as_internal_error_and_leaves_no_claim() -> None:
    r = rig()
    r.dedup.claim = lambda *a: (_ for _ in ()).throw(Boom("claim"))  # type: ignore[method-assign]
    r.process([event(1), event(2)])
    assert r.reasons() == {"e1": "internal_error", "e2": "internal_error"}
    assert not r.pisano.requests


def test_a_body_that_cannot_be_encoded_leaves_no_claim() -> None:
    r = rig()
    broken = event(2)
    broken.recipient.custom_attributes["when"] = dt.datetime(2026, 1, 1)  # type: ignore[assignment]
    r.process([event(1), broken])
    assert r.reasons() == {"e1": "internal_error", "e2": "internal_error"}
    assert r.dedup.state("e1") is None and r.dedup.state("e2") is None  # released: nothing left
    assert_one_outcome_each(r, 2)


@pytest.mark.parametrize("error", [RecursionError("deeply nested JSON"), ValueError("4301 digits"), Boom("?")])
def test_an_exception_from_the_client_after_sending_is_ambiguous(error: BaseException) -> None:
    r = rig(FakePisano([error]))
    r.process([event(1), event(2)])
    assert r.reasons() == {"e1": "ambiguous", "e2": "ambiguous"}  # the request may have arrived
    assert r.dedup.state("e1") == r.unknown_mark("e1")  # never resent without a check
    assert_one_outcome_each(r, 2)


def test_an_exception_recording_delivery_is_ambiguous_never_free_to_resend() -> None:
    r = rig()
    real = r.dedup.settle

    def settle(outcome, tag, ids):  # type: ignore[no-untyped-def]
        if outcome is Settlement.DELIVERED:
            raise Boom("settle")
        real(outcome, tag, ids)

    r.dedup.settle = settle  # type: ignore[method-assign]
    r.process([event(1)])
    assert r.reasons() == {"e1": "ambiguous"} and r.dedup.state("e1") == r.unknown_mark("e1")


def test_an_exception_renewing_before_a_retry_is_ambiguous() -> None:
    r = rig(FakePisano([unavailable(), OK]))

    def claim(n, requests, real):  # type: ignore[no-untyped-def]
        if n > 1:
            raise Boom("renew")
        return real()

    intercept_claims(r.dedup, claim)
    r.process([event(1)])
    assert r.reasons() == {"e1": "ambiguous"}
    assert len(r.pisano.requests) == 1


def test_redis_away_while_claiming_requeues_and_sends_nothing() -> None:
    r = rig()
    r.dedup.claim = lambda *a: (_ for _ in ()).throw(StateStoreError("down"))  # type: ignore[method-assign]
    r.sender._stop.set()  # do not wait out the outage backoff
    r.process([event(1)])
    assert r.kinds() == {"e1": {"requeue"}} and not r.pisano.requests


def test_an_event_is_never_sent_twice_across_replicas() -> None:
    pisano = FakePisano()
    a = rig(pisano)
    b = rig(pisano, dedup=a.dedup.replica())
    a.process([event(i) for i in range(10)])
    b.process([event(i) for i in range(5, 15)])
    assert len(pisano.sent_phones) == len(set(pisano.sent_phones)) == 15


def test_a_replay_is_sent_only_over_the_unknown_mark_of_the_attempt_it_names() -> None:
    """Issue 11, finding 1: the SRE checked one attempt; a replay naming another (or none) finds
    a mark nobody checked and is dead-lettered again, naming that mark's attempt."""
    from consumer.state.dedup import ClaimRequest

    r = rig()
    other = r.dedup.replica()
    tag = other.new_tag()
    other.claim(tag, [ClaimRequest("e1"), ClaimRequest("e2"), ClaimRequest("e3")])
    other.settle(Settlement.UNKNOWN, tag, ["e1", "e2", "e3"])
    r.process([event(1, replay_of=tag), event(2, replay_of="aaaaaaaaaaaa|bbbbbbbb"), event(3)])
    assert r.kinds() == {"e1": {"delivered"}, "e2": {"dead_letter"}, "e3": {"dead_letter"}}
    assert r.attempts() == {"e2": tag, "e3": tag}
    assert r.pisano.sent_phones == [event(1).recipient.phone]


# ---------------------------------------------------------------- a circuit per campaign

OTHER = "9a1e0000-0000-4000-8000-000000000001"


def campaign_rig(pisano: FakePisano, cooldown_ms: int = 60_000):  # type: ignore[no-untyped-def]
    from consumer.state.campaigns import CampaignCircuits
    from consumer.state.memory import MemoryCircuitStores

    limiter = windows_limiter("1000/1s")
    r = rig(pisano, limiter=limiter)
    r.sender.destination.campaigns = CampaignCircuits(MemoryCircuitStores(), cooldown_ms=cooldown_ms,
                                                      max_cooldown_ms=10 * cooldown_ms, probe_lease_ms=60_000)
    return r, limiter


def run_once(r) -> None:  # type: ignore[no-untyped-def]
    """One round of a sender thread, as `Sender._run` does it."""
    assert r.batcher.wait_for_demand(r.sender._stop, 0)
    if r.sender._campaign_short_circuit():
        return
    slot_at = r.sender.slots.reserve()
    batch = r.batcher.take(skip=r.sender.destination.campaigns.blocked())
    assert batch is not None
    r.sender.process(batch, slot_at)


@pytest.mark.parametrize("code", [13002, 13005, 13034])
def test_a_broken_campaign_opens_its_circuit_and_its_batches_spend_no_slot(code: int) -> None:
    broken = lambda phones: PisanoApiError(404, code, "Requested resource not found!")  # noqa: E731
    r, limiter = campaign_rig(FakePisano([broken]))
    r.process([event(1)])
    assert r.reasons() == {"e1": "pisano_error"}
    r.batcher.add([event(2), event(3, campaign=OTHER)])
    r.batcher.flush_all()
    slots = len(limiter.state.data.slots)
    run_once(r)  # the broken campaign's turn: dead-lettered at once
    assert len(limiter.state.data.slots) == slots and len(r.pisano.requests) == 1
    failure = next(o.failure for o in r.outcomes if o.events[0].recipient.event_id == "e2")
    assert failure is not None and failure.code == code and "campaign circuit open" in failure.message
    run_once(r)  # the other campaign still sends
    assert r.kinds()["e3"] == {"delivered"} and len(r.pisano.requests) == 2


def test_a_broken_campaign_is_probed_with_a_real_batch_and_closed_when_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("consumer.state.circuit.REFRESH_S", 0.0)  # read the fleet's state every time
    broken = PisanoApiError(404, 13002, "Requested resource not found!")
    r, _ = campaign_rig(FakePisano([broken, broken]), cooldown_ms=50)
    r.process([event(1)])
    time.sleep(0.06)
    r.process([event(2)])  # half-open: this batch is the probe; refused again
    circuits = r.sender.destination.campaigns
    assert circuits.blocked() == {CAMPAIGN}
    assert circuits.stores(CAMPAIGN).previous_cooldown_ms() == 100  # reopened, twice as long
    r.batcher.add([event(3)])
    r.batcher.flush_all()
    run_once(r)
    assert r.kinds()["e3"] == {"dead_letter"} and len(r.pisano.requests) == 2
    time.sleep(0.11)
    r.process([event(4)])  # probe again: the campaign was created at Pisano meanwhile
    assert r.kinds()["e4"] == {"delivered"} and circuits.blocked() == frozenset()
    r.process([event(5)])
    assert r.kinds()["e5"] == {"delivered"}


def test_other_request_scope_codes_do_not_open_a_campaign_circuit() -> None:
    r, _ = campaign_rig(FakePisano([PisanoApiError(403, 13013, "Permission denied")]))
    r.process([event(1)])
    r.process([event(2)])
    assert r.kinds() == {"e1": {"dead_letter"}, "e2": {"delivered"}}


def test_while_another_replica_probes_a_campaign_its_batches_spend_no_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    # Half-open, and another replica holds the probe (its batch is under way, or the replica died
    # and the lease runs out): a batch here would be refused after its slot. Replays wait for the
    # verdict (requeued, back every HOLD_S): each turn used to spend a slot, for up to the lease.
    monkeypatch.setattr("consumer.state.circuit.REFRESH_S", 0.0)
    broken = PisanoApiError(404, 13002, "Requested resource not found!")
    r, limiter = campaign_rig(FakePisano([broken]), cooldown_ms=50)
    r.process([event(1)])
    time.sleep(0.06)
    circuits = r.sender.destination.campaigns
    assert circuits.stores(CAMPAIGN).try_probe(60_000)  # another replica probes
    slots = len(limiter.state.data.slots)
    for turn in range(3):
        r.batcher.add([event(10 + turn, replay_of="aaaaaaaaaaaa|bbbbbbbb"), event(20 + turn)])
        r.batcher.flush_all()
        run_once(r)
    assert len(limiter.state.data.slots) == slots and len(r.pisano.requests) == 1
    assert all(r.kinds()[f"e{10 + turn}"] == {"requeue"} for turn in range(3))
    assert {r.reasons()[f"e{20 + turn}"] for turn in range(3)} == {"pisano_error"}


def test_a_batch_counts_as_in_flight_from_its_take_while_its_campaign_circuit_is_read() -> None:
    # A revoke waits for the events in flight on its partitions (REVOKE_GRACE_MS). The campaign
    # circuit is read from Redis after the batch is taken: a batch not counted then was neither
    # buffered nor in flight, and a revoke at that moment handed its records over at once.
    import threading

    r = rig()
    reading, go_on = threading.Event(), threading.Event()
    circuits = r.sender.destination.campaigns
    admit = circuits.admit

    def slow_admit(campaign: str):  # type: ignore[no-untyped-def]
        reading.set()
        assert go_on.wait(5)
        return admit(campaign)

    circuits.admit = slow_admit  # type: ignore[method-assign]
    worker = threading.Thread(target=r.process, args=([event(i) for i in range(3)],))
    worker.start()
    try:
        assert reading.wait(5)
        assert r.sender.in_flight() == 3
    finally:
        go_on.set()
        worker.join(5)
    assert r.sender.in_flight() == 0 and r.kinds() == {f"e{i}": {"delivered"} for i in range(3)}
