"""The producer's fatal error as the dead-letters and the receipts keep it (consumer/outcomes/producer_fatal.py):
the first fatal error is kept, others are not, it is raised once, and `polling` nests."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.outcomes.producer_fatal import ProducerFatal


def test_the_first_fatal_error_is_kept_and_raised_once() -> None:
    fatal = ProducerFatal("dead-letters")
    fatal.note(KafkaError(KafkaError._MSG_TIMED_OUT, "not fatal"))
    fatal.note(None)
    fatal.raise_once()  # nothing fatal yet
    first = KafkaError(KafkaError._FATAL, "purged")
    fatal.note(KafkaException(first))
    fatal.note(KafkaError(KafkaError._FATAL, "a later one"))
    with pytest.raises(KafkaException) as raised:
        fatal.raise_once()
    assert raised.value.args[0] is first
    fatal.raise_once()  # once: the poll loop ended, its close() goes on


def test_polling_says_whether_a_poll_serves_the_reports_and_nests() -> None:
    fatal = ProducerFatal("receipts")
    with fatal.polling():
        with fatal.polling():
            assert fatal.serving
        assert fatal.serving
    assert not fatal.serving
