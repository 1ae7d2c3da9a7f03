"""The sending side as the poll loop sees it: one lane (batcher and sender threads) per
destination, events routed to the lane of their campaign's destination.

Each lane has its own batches, threads, throttle and circuit, so a destination whose circuit is
open or whose throttle is spent never holds back another destination's events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from consumer.delivery.batching import Batcher, PendingEvent, TopicPartition
from consumer.delivery.sender import Sender
from consumer.operations.threads import LongLivedThread


@dataclass
class Lane:
    batcher: Batcher
    sender: Sender


class Lanes:
    def __init__(self, lanes: Mapping[str, Lane], route: Callable[[str], str]) -> None:
        self.lanes = dict(lanes)
        self.route = route  # campaign id -> destination name (the mapper already refused the rest)

    @property
    def buffered(self) -> int:
        return sum(lane.batcher.buffered for lane in self.lanes.values())

    def add(self, events: Iterable[PendingEvent]) -> None:
        if len(self.lanes) == 1:  # one destination: nothing to route
            next(iter(self.lanes.values())).batcher.add(events)
            return
        by_lane: dict[str, list[PendingEvent]] = {}
        for event in events:
            by_lane.setdefault(self.route(event.recipient.campaign_id), []).append(event)
        for name, group in by_lane.items():
            self.lanes[name].batcher.add(group)

    def drop(self, should_drop: Callable[[PendingEvent], bool]) -> list[PendingEvent]:
        return [e for lane in self.lanes.values() for e in lane.batcher.drop(should_drop)]

    def held_count(self) -> int:
        return sum(lane.batcher.held_count() for lane in self.lanes.values())

    def held_events(self) -> list[PendingEvent]:
        """Events waiting for their send window (quiet hours), every lane."""
        return [e for lane in self.lanes.values() for e in lane.batcher.held_events()]

    def flush_all(self, enabled: bool = True) -> None:
        for lane in self.lanes.values():
            lane.batcher.flush_all(enabled)

    def threads(self) -> list[LongLivedThread]:
        """Every lane's sender threads: the pipeline's progress depends on each (`Health.watch`)."""
        return [thread for lane in self.lanes.values() for thread in lane.sender.threads]

    def start(self) -> None:
        for lane in self.lanes.values():
            lane.sender.start()

    def stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for lane in self.lanes.values():
            lane.sender.stop(max(0.0, deadline - time.monotonic()))

    def in_flight(self, partitions: set[TopicPartition] | None = None) -> int:
        return sum(lane.sender.in_flight(partitions) for lane in self.lanes.values())
