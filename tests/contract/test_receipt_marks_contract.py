"""The receipt marks' contract (consumer/state/receipt_marks.py): a partition's acknowledged
receipts are known to its next owner, per consumer group, with the record's fingerprint; a
confirmed commit removes the marks below it and no others."""

from __future__ import annotations

from consumer.ingest.records import InboundRecord
from consumer.state.dead_letters import Origin
from consumer.state.receipt_marks import ReceiptMarks


def origin(offset: int, partition: int = 0, value: bytes = b"v") -> Origin:
    return Origin.of(InboundRecord("t", partition, offset, b"k", value, [], (1, 1_800_000_000_000)))


def test_a_partitions_receipted_records_are_known_with_their_fingerprint(receipt_marks: ReceiptMarks) -> None:
    assert receipt_marks.receipted("g", ("t", 0)) == {}
    receipt_marks.mark("g", [origin(1), origin(5), origin(2, partition=1)])
    receipt_marks.mark("g", [])
    assert receipt_marks.receipted("g", ("t", 0)) == {1: origin(1).fingerprint, 5: origin(5).fingerprint}
    assert receipt_marks.receipted("g", ("t", 1)) == {2: origin(2, partition=1).fingerprint}
    assert origin(1, value=b"other").fingerprint != receipt_marks.receipted("g", ("t", 0))[1]
    assert receipt_marks.receipted("another-group", ("t", 0)) == {}  # another group reads the topic anew


def test_a_confirmed_commit_removes_the_marks_below_it_only(receipt_marks: ReceiptMarks) -> None:
    receipt_marks.mark("g", [origin(n) for n in range(6)] + [origin(3, partition=1)])
    receipt_marks.forget_below("g", {("t", 0): 4})
    receipt_marks.forget_below("g", {})
    assert set(receipt_marks.receipted("g", ("t", 0))) == {4, 5}
    assert set(receipt_marks.receipted("g", ("t", 1))) == {3}
