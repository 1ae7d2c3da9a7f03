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

import time

import pytest
from confluent_kafka import TopicPartition

from consumer.ingest.samples import phone_for
from tests.support.fakes import FakePisano
from tests.unit.test_pipeline_outcomes import CAMPAIGN_A, loop_with_sender, record, turn_until


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
        deadline = time.monotonic() + 1.5  # time enough for a sender to take, send and report it
        while time.monotonic() < deadline:
            loop._step()
            loop._commit(all_known=True)  # the periodic recommit of every known position
            time.sleep(0.01)
        assert consumer.committed[("t", 0)] == 50, "the old owner moved the new owner's offset back"
        assert ("t", 0) not in loop.tracker.assigned()
        assert phone_for(2) not in pisano.sent_phones
        assert dedup.state("e-2") is None  # not even claimed: the new owner's to process
    finally:
        loop.delivery.stop(2)
