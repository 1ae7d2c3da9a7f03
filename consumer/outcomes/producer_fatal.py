"""The fatal error of the producer the dead-letters and the receipts share, once one was seen.

A fatal error (the idempotent producer's sequence or epoch could not be kept) means librdkafka
purged its queue and refuses every later record, for good: producing again after a backoff would
hold the partitions for ever. So each writer (consumer/outcomes/deadletter.py `DeadLetterQueue`,
consumer/outcomes/receipts.py `ReceiptWriter`) notes the first one in a `ProducerFatal`, and its
`poll()` raises it once: the poll loop ends (its close() still revokes and commits) and the
replica restarts with a new producer; nothing past those records was committed.

It also knows whether a `poll()` is serving the delivery reports (`serving`): an acknowledgement
served there has its mark written at the end of that poll, one served elsewhere (the final flush
of a shutdown) at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)


def fatal_error(error: KafkaError | BaseException | None) -> KafkaError | None:
    """The producer's error when it is fatal (the idempotent producer's sequence or epoch could not
    be kept: librdkafka purges its queue, and every later produce() fails with _FATAL, for good),
    else None. Such a producer never writes again: producing again after a backoff would hold the
    partitions for ever, so the poll loop must end and the replica restart with a fresh one."""
    if isinstance(error, KafkaException):
        error = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
    if not isinstance(error, KafkaError):
        return None
    return error if error.fatal() or error.code() == KafkaError._FATAL else None


def raise_fatal(error: KafkaError, what: str) -> None:
    """End the poll loop (module docstring): nothing past these records was committed, their next
    reader writes them."""
    log.critical("the Kafka producer failed fatally (%s); stopping: %s are never produced by this producer, "
                 "a restart produces them with a new one", error.str(), what)
    raise KafkaException(error)


class ProducerFatal:
    """One writer's view of its producer's fatal error: noted once, raised once."""

    def __init__(self, what: str) -> None:
        self.what = what  # "dead-letters", "receipts": what the producer never writes
        self.error: KafkaError | None = None
        self.raised = False
        self.serving = False  # inside poll(): acknowledgements' marks are written at its end

    def note(self, error: KafkaError | BaseException | None) -> None:
        """A producer error: kept if it is the first fatal one."""
        self.error = self.error or fatal_error(error)

    @contextmanager
    def polling(self) -> Iterator[None]:
        """A poll() serving the delivery reports."""
        serving, self.serving = self.serving, True
        try:
            yield
        finally:
            self.serving = serving

    def raise_once(self) -> None:
        """Raise the fatal error, the first time only: the poll loop ends."""
        if self.error is not None and not self.raised:
            self.raised = True  # once: the poll loop ends; its close() still revokes and commits
            raise_fatal(self.error, self.what)
