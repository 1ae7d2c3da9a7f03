"""Counting Redis round trips from the client side: every packed command sent is one trip."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.connection import AbstractConnection


@contextmanager
def count_round_trips() -> Iterator[list[int]]:
    counter = [0]
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        counter[0] += 1
        return original(self, command, check_health)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
