"""SEND_WINDOW_CLOCK=redis: Redis's TIME plus a movable offset, never blocking its readers."""

import redis

from consumer.simulator.clock import SharedClock
from consumer.state.clock import RedisWallClock
from consumer.state.redis import Keys

KEYS = Keys("p")


class FakeRedis:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.seconds = 1_800_000_000
        self.down = False

    def get(self, key: str) -> bytes | None:
        if self.down:
            raise redis.ConnectionError("down")
        return self.values.get(key)

    def time(self) -> tuple[int, int]:
        return self.seconds, 250_000


def test_the_offset_moves_the_clock_for_every_reader_and_an_outage_carries_the_last_reading() -> None:
    fake = FakeRedis()
    clock = RedisWallClock(fake, KEYS, refresh_s=3600)  # refreshed by hand below
    try:
        base = 1_800_000_000_250
        assert base <= clock.now_ms() < base + 1000
        fake.values[KEYS.clock_offset()] = b"-21600000"  # six hours back
        clock.refresh()
        assert base - 21_600_000 <= clock.now_ms() < base - 21_600_000 + 1000
        assert abs(SharedClock(clock).wall_ns() // 1_000_000 - clock.now_ms()) < 1000
        fake.down = True
        clock.refresh()  # logged once, the last reading carried forward
        assert base - 21_600_000 <= clock.now_ms() < base - 21_600_000 + 1000
    finally:
        clock.close()
