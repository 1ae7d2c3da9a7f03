"""OffsetTracker against a model that knows every copy of every record (the review of the move-back
change, kept): records read with gaps, positions moved back (below the oldest pending record, to
the last offset read, into a gap, again and again, with nothing pending), outcomes for any copy
(dead ones and twice), requests' outcomes across partitions and epochs, commits confirmed late and
in order, quiet-hours waits, revocations. After every step the tracker must agree with the model."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import pytest

from consumer.delivery.batching import PendingEvent
from consumer.outcomes.offsets import OffsetTracker

TPS = [("t", 0), ("t", 1)]
Tp = tuple[str, int]


@dataclass
class Copy:
    """One read of one record: `dead` once the position moved back to or below its offset."""

    tp: Tp
    offset: int
    epoch: int
    size: int
    at: float
    finished: bool = False
    dead: bool = False
    waited: float | None = None


class Model:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.tracker = OffsetTracker()
        self.copies: dict[Tp, list[Copy]] = {tp: [] for tp in TPS}
        self.last = dict.fromkeys(TPS, -1)
        self.broker: dict[Tp, int | None] = dict.fromkeys(TPS, None)  # what the broker holds
        self.in_flight: list[dict[Tp, int]] = []  # commits sent, confirmed in order
        self.now = 0.0
        for tp in TPS:
            self.tracker.assign(tp)

    def live(self, tp: Tp) -> list[Copy]:
        return [c for c in self.copies[tp] if not c.dead]

    def read(self, tp: Tp, offset: int) -> None:
        for c in self.copies[tp]:
            if c.offset >= offset:
                c.dead = True
        size = self.rng.choice((0, 10, 17))
        epoch = self.tracker.track(tp, offset, size, self.now)
        self.last[tp] = offset
        self.copies[tp].append(Copy(tp, offset, epoch, size, self.now))

    def step(self) -> None:
        rng, tracker = self.rng, self.tracker
        self.now += 1.0
        op, tp = rng.random(), rng.choice(TPS)
        if op < 0.35:  # the next record, maybe past a gap
            last = self.last[tp]
            self.read(tp, rng.randrange(0, 5) if last < 0 else last + rng.choice((1, 1, 1, 2, 3)))
        elif op < 0.40 and self.last[tp] >= 0:  # the position moves back
            last = self.last[tp]
            self.read(tp, max(0, last - 30) if rng.random() < 0.2 else rng.randrange(max(0, last - 8), last + 1))
        elif op < 0.60 and self.copies[tp]:  # one outcome, of any copy, maybe twice
            c = rng.choice(self.copies[tp])
            tracker.finish(tp, c.offset, c.epoch)
            c.finished |= not c.dead
        elif op < 0.75:  # a request's outcome: partitions and epochs mixed
            pool = self.copies[TPS[0]] + self.copies[TPS[1]]
            if pool:
                picked = [rng.choice(pool) for _ in range(rng.randrange(1, 8))]
                events = [PendingEvent(None, c.tp, c.offset, c.epoch, None, 0.0) for c in picked]  # type: ignore[arg-type]
                current = tracker.finish_events(events)
                assert sorted(map(id, current)) == sorted(id(e) for e, c in zip(events, picked, strict=True)
                                                          if not c.dead)
                for c in picked:
                    c.finished |= not c.dead
        elif op < 0.83:
            points = tracker.commit_points(all_known=rng.random() < 0.2)
            if points:
                self.in_flight.append(points)
        elif op < 0.91 and self.in_flight:
            self.confirm(self.in_flight.pop(0))
        elif op < 0.95:  # held by quiet hours
            held = [(c.tp, c.offset) for c in self.live(tp) if not c.finished and rng.random() < 0.5]
            tracker.waiting(held, self.now)
            for c in self.live(tp):
                if not c.finished and (c.tp, c.offset) in held:
                    c.waited = self.now
        elif op < 0.96:  # revoked, assigned again
            tracker.revoke(tp)
            tracker.assign(tp)
            self.copies[tp], self.last[tp], self.broker[tp] = [], -1, None
            self.in_flight = [{t: o for t, o in points.items() if t != tp} for points in self.in_flight]

    def confirm(self, points: dict[Tp, int]) -> None:
        self.broker.update(points)
        self.tracker.committed(points)

    def check(self) -> None:
        tracker = self.tracker
        for tp in TPS:
            part = tracker._partitions[tp]
            live = self.live(tp)
            unfinished = [c for c in live if not c.finished]
            offsets = [c.offset for c in live]
            assert len(offsets) == len(set(offsets)), "two live copies of one offset"
            if unfinished:
                oldest = min(c.offset for c in unfinished)
                assert part.next_offset is None or part.next_offset <= oldest, "the commit point passed a record"
            elif live:
                assert part.next_offset == max(offsets) + 1, "the commit point lags"
            for c in self.copies[tp]:
                assert tracker.live(tp, c.epoch, c.offset) is not c.dead
            assert part.finished <= set(part.pending)
            assert set(part.sizes) <= {c.offset for c in unfinished}
            assert set(part.waited) <= {c.offset for c in unfinished}
            assert list(part.pending) == sorted(part.pending) and len(part.pending) == len(part.consumed_at)
        assert tracker.unfinished_bytes == sum(c.size for tp in TPS for c in self.live(tp) if not c.finished)
        ages = [c.at if c.waited is None else c.waited for tp in TPS for c in self.live(tp) if not c.finished]
        assert tracker.oldest_unfinished_age(self.now) == (max(0.0, self.now - min(ages)) if ages else 0.0)

    def drain(self) -> None:
        """Every live record finishes and every commit is confirmed: the broker must end at the
        commit point, and nothing may be left behind."""
        for tp in TPS:
            for c in self.live(tp):
                self.tracker.finish(tp, c.offset, c.epoch)
        while self.in_flight:
            self.confirm(self.in_flight.pop(0))
        self.confirm(self.tracker.commit_points())
        for tp in TPS:
            part = self.tracker._partitions[tp]
            if part.next_offset is not None:
                assert self.broker[tp] == part.next_offset, "a commit the broker needs was never sent"
            assert not part.pending and not part.finished and not part.sizes and not part.waited
        assert self.tracker.unfinished_bytes == 0


@pytest.mark.parametrize("first_seed", range(0, 200, 20))
def test_the_tracker_agrees_with_a_model_of_every_copy(first_seed: int) -> None:
    logging.disable(logging.WARNING)  # the move-back warning, hundreds of times
    try:
        for seed in range(first_seed, first_seed + 20):
            model = Model(random.Random(seed))
            for step in range(400):
                model.step()
                try:
                    model.check()
                except AssertionError as exc:
                    raise AssertionError(f"seed {seed}, step {step}: {exc}") from exc
            model.drain()
    finally:
        logging.disable(logging.NOTSET)
