from datetime import UTC, datetime

from consumer.outcomes.deadletter import Failure, dead_letter_headers, replay_count


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
