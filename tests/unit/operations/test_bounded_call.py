"""call_within: a blocking client call given up after its bound."""

from __future__ import annotations

import threading

from consumer.operations.bounded_call import call_within


def test_a_call_that_returns_in_time_gives_its_value() -> None:
    result = call_within(lambda: 42, 5.0, "t")
    assert result.done and result.value == 42 and result.error is None


def test_a_call_that_raises_in_time_gives_its_exception_without_raising_it() -> None:
    def fail() -> None:
        raise KeyError("x")

    result = call_within(fail, 5.0, "t")
    assert result.done and isinstance(result.error, KeyError)


def test_a_base_exception_is_given_too_never_lost_in_its_thread() -> None:
    def end() -> None:
        raise SystemExit(3)

    result = call_within(end, 5.0, "t")
    assert result.done and isinstance(result.error, SystemExit)


def test_a_call_past_its_bound_is_given_up_and_its_late_answer_dropped() -> None:
    answer, answered = threading.Event(), threading.Event()

    def slow() -> str:
        answer.wait()
        answered.set()
        return "late"

    result = call_within(slow, 0.05, "slow-call")
    assert not result.done and result.value is None
    (thread,) = [t for t in threading.enumerate() if t.name == "slow-call"]
    answer.set()
    thread.join(5)
    assert answered.is_set() and not thread.is_alive()
    assert not result.done and result.value is None  # the caller went on without it
