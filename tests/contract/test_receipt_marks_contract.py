"""The receipt marks' contract (consumer/state/receipt_marks.py): a partition's acknowledged
receipts are known to its next owner, per consumer group, with the record's fingerprint; a
confirmed commit removes the marks below it and no others."""

from __future__ import annotations

import pytest

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


def test_a_partition_over_the_bound_is_not_loaded_and_the_others_are(make_receipt_marks) -> None:  # type: ignore[no-untyped-def]
    """Read in pages (2 members a round trip here), never more than `MAX_PARTITION_MARKS` (4 here):
    a partition over it is refused, naming its key (Redis's) and how many it holds."""
    from consumer.errors import OversizeStateError

    marks = make_receipt_marks(most=4, page=2)
    marks.mark("g", [origin(n) for n in range(4)] + [origin(n, partition=1) for n in range(5)])
    assert marks.receipted("g", ("t", 0)) == {n: origin(n).fingerprint for n in range(4)}
    with pytest.raises(OversizeStateError) as raised:
        marks.receipted("g", ("t", 1))
    assert "5 receipt marks of t[1]" in str(raised.value) and "delete that key" in str(raised.value)
