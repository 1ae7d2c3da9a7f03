"""Seams found by review after the merges: each test failed before its fix."""

from __future__ import annotations

import time
from typing import Any

from consumer.delivery.slots import Slot, SlotReserver
from consumer.errors import DecodeError
from consumer.ingest.backlog import Backlog
from consumer.ingest.records import InboundRecord
from consumer.operations.health import Health
from consumer.operations.logs import LogBudget
from consumer.operations.metrics import Metrics
from consumer.sre.replay_signature import VerifiedReplay
from consumer.state.circuit import Trip
from consumer.state.dedup import ClaimRequest, ClaimStatus
from consumer.state.memory import MemoryDedup, _Entry
from tests.support.fakes import FakePisano, event, rig


def test_an_error_reading_the_campaign_circuit_still_ends_every_event() -> None:
    r = rig(FakePisano())

    def broken(campaign: str) -> Any:
        raise ValueError("malformed circuit hash")

    r.sender.destination.campaigns.admit = broken  # type: ignore[method-assign]
    r.process([event(1), event(2)])
    assert r.reasons() == {"e1": "internal_error", "e2": "internal_error"} and not r.pisano.requests


def test_a_refusal_after_the_slot_keeps_replays_waiting_and_dead_letters_the_rest() -> None:
    r = rig(FakePisano())
    r.sender.destination.campaigns.admit = lambda campaign: Trip(13034, 400, "Invalid Flow")  # type: ignore[method-assign]
    r.process([event(1, replay_of="a|b"), event(2)])
    assert r.kinds() == {"e1": {"requeue"}, "e2": {"dead_letter"}}


def test_claims_taken_long_before_the_slot_are_renewed_before_the_post() -> None:
    import threading

    from consumer.delivery.outage import RedisOutage
    from consumer.state.limiter import NoLimiter

    stop = threading.Event()
    metrics = Metrics()
    slots = SlotReserver(NoLimiter(), metrics, stop, RedisOutage(metrics, stop), 30.0, "default")
    renewals: list[float] = []

    def renew() -> bool:
        renewals.append(time.monotonic())
        return True

    # Claimed just now: the slot is within the claim's lead time, no renewal needed.
    assert slots.ready(Slot(time.monotonic()), renew, fresh=time.monotonic()).state == "go" and not renewals
    # Claimed 10 s ago (a Redis outage while topping up): renewed before the POST.
    assert slots.ready(Slot(time.monotonic()), renew, fresh=time.monotonic() - 10).state == "go" and len(renewals) == 1


def test_a_signed_replay_dead_lettered_at_intake_carries_its_replay_count() -> None:
    class Refusing:
        def decode(self, value: bytes) -> Any:
            raise DecodeError("not Avro")

    letters: list[InboundRecord] = []
    backlog = Backlog(Refusing(), None, 1 << 20, metrics=Metrics(), health=Health(joined=True),  # type: ignore[arg-type]
                      dead_letter=lambda record, tp, epoch, failure: letters.append(record), log_budget=LogBudget(),
                      verify_replay=lambda record: VerifiedReplay(2, None))
    record = InboundRecord("t", 0, 5, b"k", b"garbage", [("dlq.replays", b"2")], (1, int(time.time() * 1000)))
    backlog.add(record, ("t", 0), 0)
    backlog.decode(time.monotonic(), time.monotonic() + 1, lambda tp, epoch, offset: True)
    assert letters == [record] and record.replays == 2  # `replay --max-replays` can stop it


def test_the_memory_dedup_reads_malformed_marks_as_claim_lua_does() -> None:
    dedup = MemoryDedup(lease_ms=1000, horizon_s=3600)
    now = dedup.clock()
    for event_id, value in (("e1", "u|"), ("e2", "c||5"), ("e3", "c|a|b|xyz")):
        dedup._marks[event_id] = _Entry(value, now + 3_600_000)
    answer = dedup.claim(dedup.new_tag(), [ClaimRequest("e1"), ClaimRequest("e2"), ClaimRequest("e3")])
    assert list(answer) == [ClaimStatus.UNKNOWN] * 3
    assert answer.attempts == ["", "", "-"]  # claim.lua: '' (empty attempt), '' (empty owner), '-' (no match)
