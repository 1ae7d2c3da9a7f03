"""`pisano-sms check` reads the group's commit stamps as a starting replica does
(consumer/state/witness.py), with in-memory Kafka."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from consumer.config.settings import Settings
from consumer.operations import check
from consumer.state.origins import DEDUP


class Undecodable:
    """A committed partition whose metadata confluent-kafka cannot decode (another tool's bytes)."""

    topic, partition, offset, error = "t", 0, 5, None

    @property
    def metadata(self) -> str:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


class Consumer:
    def list_topics(self, timeout: float) -> Any:
        return SimpleNamespace(topics={"t": SimpleNamespace(partitions={0: None})})

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        return [Undecodable()]

    def close(self) -> None:
        pass


def test_metadata_another_tool_committed_that_cannot_be_decoded_is_passed_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the UnicodeDecodeError ended the redis line (the start had been mended, check not)."""
    monkeypatch.setattr(check, "make_consumer", lambda settings, **extra: Consumer())
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid")
    assert check._witnessed(settings, {DEDUP: [None] * 64}, {DEDUP: 3600.0}, None) == ""
