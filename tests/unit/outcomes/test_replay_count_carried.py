"""`dlq.replays` on a dead-letter bounds `replay --max-replays`: it must only ever grow.

Before, a consumed record's dead-letter carried its *verified* replay count (the signature's), so
in a fleet without REPLAY_SIGNING_KEY (or with a signature past the dedup horizon, or a rotated key)
a replay that failed again was dead-lettered with 0, and `replay --max-replays 3` replayed it for
ever. The count is now the largest of the verified one and every `dlq.replays` header the record
carries: unverified, it can only make `replay` refuse sooner, never send anything (the dedup goes by
the verified count alone), and no header a writer adds can lower it."""

from __future__ import annotations

import time

from consumer.ingest.records import InboundRecord
from consumer.outcomes.deadletter import Failure, _minimal_headers, dead_letter_headers, replay_count
from consumer.sre.dlq_read import DeadLetter, Filters, parse_dead_letter
from consumer.sre.replay import Verdict, judge, replay_headers
from consumer.sre.replayed_records import ReplayedRecords


def _consumed(headers: list[tuple[str, bytes | None]], verified: int = 0, offset: int = 7) -> InboundRecord:
    record = InboundRecord("transactions", 0, offset, b"k", b"event", headers, (1, int(time.time() * 1000)))
    record.replays = verified  # what the backlog sets from the signature (0: no key, or not verified)
    return record


class _DlqMessage:
    """A dead-letter as `replay` reads it back from the DLQ."""

    def __init__(self, headers: list[tuple[str, bytes]], offset: int) -> None:
        self._headers, self._offset = headers, offset

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"event"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "dlq"

    def timestamp(self) -> tuple[int, int]:
        return (1, int(time.time() * 1000))


def test_an_unsigned_replay_failing_again_keeps_its_count() -> None:
    record = _consumed([("dlq.replays", b"2")], verified=0)
    assert replay_count(record) == 2
    assert dict(dead_letter_headers(record, Failure("pisano_error", "x")))["dlq.replays"] == b"2"
    # The small dead-letter written when the full one is refused as too large carries it too.
    assert dict(_minimal_headers(record, Failure("pisano_error", "x")))["dlq.replays"] == b"2"


def test_a_verified_count_is_never_lowered_and_a_forged_lower_header_does_not_lower_it() -> None:
    assert replay_count(_consumed([("dlq.replays", b"0")], verified=2)) == 2
    # A second header, or one that is not a number, next to the real count: the largest stands.
    assert replay_count(_consumed([("dlq.replays", b"0"), ("dlq.replays", b"3")])) == 3
    assert replay_count(_consumed([("dlq.replays", b"3"), ("dlq.replays", b"x")])) == 3


def test_replay_max_replays_stops_a_record_that_keeps_failing_without_a_signing_key() -> None:
    """The loop itself: DLQ -> replay (unsigned) -> the consumer fails it again -> DLQ, until
    --max-replays refuses it."""
    max_replays, rounds = 3, 0
    headers = dead_letter_headers(_consumed([]), Failure("pisano_error", "x"))
    letter: DeadLetter | None = None
    for offset in range(10):
        letter = parse_dead_letter(_DlqMessage(list(headers), offset))
        assert letter is not None
        if judge(letter, Filters(), ReplayedRecords(), max_replays) is not Verdict.REPLAY:
            break
        rounds += 1
        published = replay_headers(letter, signing_key=None)
        # Consumed without a key: not verified. Fails again.
        again = _consumed([(k, v) for k, v in published], verified=0, offset=100 + offset)
        headers = dead_letter_headers(again, Failure("pisano_error", "x"))
    assert letter is not None and judge(letter, Filters(), ReplayedRecords(), max_replays) is Verdict.OVER_MAX_REPLAYS
    assert rounds == max_replays
