"""Adversarial review of partition revocation, loss and reassignment (cooperative-sticky).

A record of a partition this replica no longer owns can still come out of `consume` after the
partition was revoked or lost: librdkafka's batch consume can hand back messages it collected
before serving the rebalance callback in the same call (confluent-kafka-python#1013, librdkafka
#1359), and the poll loop's own comment (`OffsetTracker.track`) says it must be exact about it.
Such a record is the new owner's: this replica must neither process it nor, above all, commit an
offset for that partition, which would move the new owner's committed offset back (and, as the
recommit repeats every partition's position every 15 s, keep moving it back).
"""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import TopicPartition

from consumer.ingest.samples import phone_for
from tests.support.fakes import FakePisano
from tests.unit.test_pipeline_outcomes import CAMPAIGN_A, GatedPisano, loop_with_sender, record, turn_until


@pytest.mark.parametrize("how", ["revoked", "lost"])
def test_a_record_of_a_partition_given_up_consumed_late_is_neither_sent_nor_committed_by_the_old_owner(
        how: str) -> None:
    pisano = FakePisano()
    loop, consumer, dedup = loop_with_sender(pisano, batch_max_wait_ms=0)
    consumer.incremental_unassign = lambda partitions: None  # type: ignore[attr-defined]
    consumer.queue = [record(0, CAMPAIGN_A), record(1, CAMPAIGN_A)]
    try:
        turn_until(loop, lambda: consumer.committed.get(("t", 0)) == 2)
        (loop._on_revoke if how == "revoked" else loop._on_lost)(consumer, [TopicPartition("t", 0)])
        # The new owner moves on and commits far ahead.
        consumer.committed[("t", 0)] = 50
        # A message of the old assignment the client still hands back after the revocation.
        consumer.queue = [record(2, CAMPAIGN_A)]
        turn_until(loop, lambda: not consumer.queue)
        # Neither buffered nor in flight: no sender can send it later, and no outcome can come.
        assert ("t", 0) not in loop.tracker.assigned()
        assert loop.delivery.buffered == 0 and loop.delivery.in_flight() == 0
        loop._commit(all_known=True)  # the periodic recommit of every known position
        assert consumer.committed[("t", 0)] == 50, "the old owner moved the new owner's offset back"
        assert phone_for(2) not in pisano.sent_phones
        assert dedup.state("e-2") is None  # not even claimed: the new owner's to process
    finally:
        loop.delivery.stop(2)


def test_a_partition_assigned_back_while_its_old_copy_is_in_flight_sends_the_event_once_and_commits_it_once() -> None:
    """Revoked with a request still under way (past REVOKE_GRACE_MS), then assigned back to the
    same replica: the record read again is a new copy in a new epoch. Its claim finds the old
    request's and waits; the old request's acceptance does not finish the new epoch's record (its
    outcome is for the assignment before); the copy then finds the id delivered and is skipped,
    and only then is the offset committed. One POST, one commit past the record."""
    pisano = GatedPisano()
    pisano.gates[CAMPAIGN_A] = threading.Event()
    loop, consumer, dedup = loop_with_sender(pisano, batch_max_wait_ms=0, revoke_grace_ms=100)
    consumer.incremental_unassign = lambda partitions: None  # type: ignore[attr-defined]
    consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    sender_metrics = loop.delivery.lanes["default"].sender.metrics
    consumer.queue = [record(0, CAMPAIGN_A)]
    try:
        turn_until(loop, lambda: len(pisano.requests) == 0 and loop.delivery.in_flight() == 1
                   and (dedup.state("e-0") or "").startswith("c|"))
        loop._on_revoke(consumer, [TopicPartition("t", 0)])
        assert ("t", 0) not in consumer.committed  # the request under way holds it back
        loop._on_assign(consumer, [TopicPartition("t", 0)])
        consumer.queue = [record(0, CAMPAIGN_A)]  # read again from the committed position
        turn_until(loop, lambda: sender_metrics.events_held._value.get() >= 1)  # held by the old claim
        pisano.gates[CAMPAIGN_A].set()
        turn_until(loop, lambda: consumer.committed.get(("t", 0)) == 1, timeout=10)
        assert pisano.sent_phones == [phone_for(0)]
        assert dedup.state("e-0") == "d"
        assert sender_metrics.duplicates_skipped._value.get() == 1
    finally:
        pisano.gates[CAMPAIGN_A].set()
        loop.delivery.stop(2)
