"""Counting Redis round trips from the client side: every command packet sent is one trip.

Opening a connection sends its own handshake (HELLO, CLIENT SETNAME/SETINFO, ...): those are
the price of a new connection, not of an operation, and are counted apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from redis.connection import AbstractConnection

HANDSHAKE = {"HELLO", "CLIENT", "AUTH", "SELECT", "PING", "READONLY"}


class Trips(Counter[str]):
    """Packets by command name."""

    @property
    def operations(self) -> int:
        return sum(n for name, n in self.items() if name not in HANDSHAKE)

    def __getitem__(self, key: object) -> int:  # trips[0]: the operation count, as before
        if key == 0:
            return self.operations
        return super().__getitem__(key)  # type: ignore[index]


def _command_name(packet: object) -> str:
    first = packet[0] if isinstance(packet, list) else packet
    lines = bytes(first).split(b"\r\n")  # type: ignore[arg-type]
    return lines[2].decode().upper() if len(lines) > 2 else "?"


@contextmanager
def count_round_trips() -> Iterator[Trips]:
    trips = Trips()
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        trips[_command_name(command)] += 1
        return original(self, command, check_health)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield trips
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
