from datetime import UTC, datetime

from consumer.outcomes.deadletter import Failure, dead_letter_headers, error_text, replay_count


class FakeMessage:
    def __init__(self, headers: list[tuple[str, bytes]] | None) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def topic(self) -> str:
        return "transactions"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 42

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def test_design_headers_are_added_and_originals_kept() -> None:
    message = FakeMessage([("trace-id", b"abc")])
    failure = Failure("pisano_error", "Wrong authentication token", code=13001, http_status=401,
                      campaign_id="c-1", attempts=1, request_id="9f2c0d3e4b5a46f7a8b9c0d1e2f3a4b5")
    headers = dict(dead_letter_headers(message, failure, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)))
    assert headers == {
        "trace-id": b"abc",
        "pisano.error.code": b"13001",
        "pisano.http.status": b"401",
        "pisano.error.message": b"Wrong authentication token",
        "dlq.reason": b"pisano_error",
        "dlq.original.topic": b"transactions",
        "dlq.original.partition": b"3",
        "dlq.original.offset": b"42",
        "dlq.original.timestamp": b"1700000000000",
        "dlq.campaign.id": b"c-1",
        "dlq.attempts": b"1",
        "dlq.request.id": b"9f2c0d3e4b5a46f7a8b9c0d1e2f3a4b5",
        "dlq.failed.at": b"2026-01-02T03:04:05.000Z",
        "dlq.replays": b"0",
    }


def test_a_replayed_record_failing_again_gets_fresh_headers_and_keeps_its_replay_count() -> None:
    message = FakeMessage([("dlq.reason", b"ambiguous"), ("pisano.error.code", b"13001"), ("dlq.replays", b"2")])
    assert replay_count(message) == 2
    headers = dead_letter_headers(message, Failure("decode_error", "bad"))
    names = [k for k, _ in headers]
    assert names.count("dlq.reason") == 1 and "pisano.error.code" not in names
    assert dict(headers)["dlq.replays"] == b"2"


def test_a_hostile_replay_header_counts_as_zero() -> None:
    for value in (b"\xc2\xb2", "²".encode(), b"-1", b"abc", b"9" * 40):
        assert replay_count(FakeMessage([("dlq.replays", value)])) == 0


class _Origin(FakeMessage):
    def __init__(self, partition: int, offset: int, timestamp: int) -> None:
        super().__init__(None)
        self._at = (partition, offset, timestamp)

    def partition(self) -> int:
        return self._at[0]

    def offset(self) -> int:
        return self._at[1]

    def timestamp(self) -> tuple[int, int]:
        return (1, self._at[2])


def test_the_events_of_one_failed_request_share_its_headers_each_with_its_own_origin() -> None:
    """The failure's headers are made once per failure (a request's 5,000 events share one), the
    origin's for each record: in one order, whatever was made before."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    failure = Failure("ambiguous", "call +905321234567", code=None, http_status=502, campaign_id="c-1",
                      attempt_id="a-1")
    first = dead_letter_headers(_Origin(1, 7, 1_700_000_000_000), failure, at, group="g")
    second = dead_letter_headers(_Origin(2, 9, 0), failure, at, group="g")
    assert [k for k, _ in first] == [
        "pisano.http.status", "pisano.error.message", "dlq.reason", "dlq.original.topic",
        "dlq.original.partition", "dlq.original.offset", "dlq.original.timestamp",
        "dlq.original.consumer.group", "dlq.campaign.id", "dlq.attempts", "dlq.attempt.id", "dlq.failed.at",
        "dlq.replays"]
    assert dict(first)["pisano.error.message"] == error_text(failure.message).encode() != failure.message.encode()
    assert (dict(first)["dlq.original.partition"], dict(first)["dlq.original.offset"]) == (b"1", b"7")
    assert (dict(second)["dlq.original.partition"], dict(second)["dlq.original.offset"]) == (b"2", b"9")
    assert "dlq.original.timestamp" not in dict(second)  # the record had none
    assert [h for h in second if h[0] != "dlq.original.partition" and h[0] != "dlq.original.offset"] == \
        [h for h in first if h[0] not in ("dlq.original.partition", "dlq.original.offset", "dlq.original.timestamp")]
    other_group = dead_letter_headers(_Origin(1, 7, 1), failure, at, group="h")
    assert dict(other_group)["dlq.original.consumer.group"] == b"h"


def test_a_long_message_is_cut_and_redacted_the_same_whether_kept_or_not() -> None:
    long_message = "Pisano said: " + "x " * 3000 + "call +905321234567"
    failure = Failure("pisano_error", long_message, code=13028)
    text = dict(dead_letter_headers(_Origin(1, 1, 1), failure))["pisano.error.message"]
    assert text == error_text(long_message).encode() and len(text) <= 1000 and b"905321234567" not in text
    assert error_text("call +905321234567") == error_text("call +905321234567") and "905321234567" not in \
        error_text("call +905321234567")


def test_a_failure_equal_to_a_kept_one_but_written_otherwise_gets_its_own_headers() -> None:
    """Failures are kept by equality, and 1 == True == 1.0, 0.0 == -0.0: a kept failure's headers
    must not stand for one whose values are written otherwise (nor a value that cannot be kept,
    a list, lose the failure's headers)."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for name, kept, other, written in [("code", 1, True, b"True"), ("code", 1, 1.0, b"1.0"),
                                       ("http_status", 0.0, -0.0, b"-0.0"), ("attempts", 2, 2.0, b"2.0")]:
        header = {"code": "pisano.error.code", "http_status": "pisano.http.status", "attempts": "dlq.attempts"}[name]
        dead_letter_headers(FakeMessage([]), Failure("pisano_error", "m", **{name: kept}), at, group="g")
        again = dead_letter_headers(FakeMessage([]), Failure("pisano_error", "m", **{name: other}), at, group="g")
        assert dict(again)[header] == written, name
    listed = dead_letter_headers(FakeMessage([]), Failure("pisano_error", "m", campaign_id=["c"]), at)  # type: ignore[arg-type]
    assert dict(listed)["dlq.campaign.id"] == b"['c']"


class _Unplaced(FakeMessage):
    """A message without a topic, partition or offset (none of a consumed record's, but the
    headers are made from whatever message is given): those headers are left out, as before."""

    def topic(self) -> str:
        return None  # type: ignore[return-value]

    def partition(self) -> int:
        return None  # type: ignore[return-value]

    def offset(self) -> int:
        return None  # type: ignore[return-value]


def test_a_message_without_a_topic_partition_or_offset_leaves_their_headers_out() -> None:
    headers = dict(dead_letter_headers(_Unplaced([]), Failure("decode_error", "bad")))
    assert not {"dlq.original.topic", "dlq.original.partition", "dlq.original.offset"} & set(headers)
    assert headers["dlq.reason"] == b"decode_error" and headers["dlq.original.timestamp"] == b"1700000000000"
