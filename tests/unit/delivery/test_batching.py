import threading
from typing import Any

from consumer.delivery.batching import Batcher, PendingEvent
from consumer.ingest.mapping import Recipient


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ev(n: int, campaign: str = "A", phone: str | None = None, event_id: str | None = None, at: float = 100.0,
       partition: int = 0) -> PendingEvent:
    recipient = Recipient(event_id or f"e{n}", campaign, phone or f"+9053200{n:05d}")
    return PendingEvent(message=None, tp=("t", partition), offset=n, epoch=1, recipient=recipient, enqueued_at=at)


STOP = threading.Event()


def test_full_batch_is_due_at_once_and_leaves_full() -> None:
    clock = Clock()
    batcher = Batcher(3, 10.0, clock)
    batcher.add([ev(i) for i in range(7)])
    assert batcher.wait_for_demand(STOP, 0)
    assert batcher.wait_for_demand(STOP, 0)
    assert not batcher.wait_for_demand(STOP, 0)  # the 7th event is not due yet: no third slot
    assert [e.offset for e in batcher.take().events] == [0, 1, 2]  # type: ignore[union-attr]
    assert batcher.buffered == 4


def test_partial_batch_is_due_after_the_linger_time() -> None:
    clock = Clock()
    batcher = Batcher(5000, 1.0, clock)
    batcher.add([ev(1)])
    assert not batcher.wait_for_demand(STOP, 0)
    clock.now += 1.0
    assert batcher.wait_for_demand(STOP, 0)


def test_batch_keeps_filling_until_its_slot() -> None:
    clock = Clock()
    batcher = Batcher(10, 1.0, clock)
    batcher.add([ev(1)])
    clock.now += 1.5
    assert batcher.wait_for_demand(STOP, 0)
    batcher.add([ev(i, at=clock.now) for i in range(2, 9)])  # arrive while the slot is awaited
    assert len(batcher.take()) == 8  # type: ignore[arg-type]


def test_a_phone_and_an_event_id_at_most_once_per_request() -> None:
    batcher = Batcher(10, 0.0, Clock())
    batcher.add([ev(1, phone="+1"), ev(2, phone="+1"), ev(3, event_id="e1"), ev(4)])
    first = batcher.take()
    assert first is not None
    assert [e.offset for e in first.events] == [1, 4]
    second = batcher.take()
    # The phone's second event became sendable when the first was taken; the id's twin waited.
    assert second is not None and sorted(e.offset for e in second.events) == [2, 3]


def test_oldest_due_campaign_goes_first() -> None:
    clock = Clock()
    batcher = Batcher(100, 1.0, clock)
    batcher.add([ev(1, "young", at=99.5), ev(2, "old", at=98.0), ev(3, "fresh", at=100.0)])
    assert batcher.take().campaign_id == "old"  # type: ignore[union-attr]
    assert batcher.take().campaign_id == "young"  # type: ignore[union-attr]
    # nothing due any more, but a slot is not wasted while someone waits
    assert batcher.take().campaign_id == "fresh"  # type: ignore[union-attr]
    assert batcher.take() is None


def test_drop_revoked_partitions() -> None:
    batcher = Batcher(10, 1.0, Clock())
    batcher.add([ev(i, partition=i % 2) for i in range(6)])
    dropped = batcher.drop(lambda e: e.tp == ("t", 1))
    assert sorted(e.offset for e in dropped) == [1, 3, 5]
    assert batcher.buffered == 3


def test_flush_all_makes_everything_due() -> None:
    batcher = Batcher(100, 60.0, Clock())
    batcher.add([ev(1, "a"), ev(2, "b")])
    assert not batcher.wait_for_demand(STOP, 0)
    batcher.flush_all()
    assert batcher.wait_for_demand(STOP, 0) and batcher.wait_for_demand(STOP, 0)


def test_top_up_excludes_phones_and_ids_already_in_the_request() -> None:
    batcher = Batcher(10, 0.0, Clock())
    batcher.add([ev(1), ev(2), ev(3, phone="+9053200000001")])
    batch = batcher.take()
    assert batch is not None
    kept = batch.events[:1]  # as if the second one was skipped as a duplicate
    batcher.add([ev(9, phone=kept[0].recipient.phone), ev(10)])
    extra = batcher.top_up(type(batch)(batch.campaign_id, kept), 5)
    assert [e.offset for e in extra] == [3, 10] or [e.offset for e in extra] == [10]


def test_waiters_wake_when_events_arrive() -> None:
    batcher = Batcher(2, 60.0)
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(batcher.wait_for_demand(STOP, 5)))
    thread.start()
    batcher.add([ev(1), ev(2)])
    thread.join(5)
    assert got == [True]


def test_idle_senders_sleep_while_the_due_batch_has_its_slot() -> None:
    clock = Clock()
    batcher = Batcher(10, 1.0, clock)
    batcher.add([ev(1, at=90.0)])  # due since long
    assert batcher.wait_for_demand(STOP, 0)  # one sender promised its slot
    # The others must wait for new demand, not wake every millisecond for a batch already promised.
    assert batcher._next_due_at(clock.now) is None
    batcher.add([ev(2, "B", at=100.0)])
    assert batcher._next_due_at(clock.now) == 101.0


# ------------------------------------------------------------------ fairness between campaigns

def test_one_busy_phone_does_not_starve_other_campaigns_under_pisano_windows() -> None:
    """3,000 events of one phone and three campaigns of ordinary traffic more than the budget
    carries, under Pisano's cloud windows on a simulated clock (40 minutes of its budget in
    seconds), one request per slot: every campaign gets its share of the requests, none waits more
    than two of its turns while due, and the phone's events leave one per request, in order."""
    from consumer.config.windows import parse_rate_limits
    from consumer.state.memory import MemoryLimiter

    clock_ms = [0]
    limiter = MemoryLimiter(parse_rate_limits("20/5s,40/25s,80/125s,160/625s"), margin_ms=500,
                            horizon_ms=10**9, clock=lambda: clock_ms[0])
    batcher = Batcher(10, 1.0, lambda: clock_ms[0] / 1000)  # requests of 10: the budget is scarce
    batcher.add([ev(n, "busy", phone="+905320000001", at=0.0) for n in range(3000)])
    campaigns = ["busy", "A", "B", "C"]
    arrived, serial, order, sent = 0.0, 100_000, [], []
    missed = dict.fromkeys(campaigns, 0)  # slots a due campaign has waited for its turn
    worst = dict.fromkeys(campaigns, 0)
    for _ in range(600):
        clock_ms[0] = limiter.acquire().slot_ms
        now = clock_ms[0] / 1000
        while arrived <= now:  # 5 events per second and campaign (its share carries 0.6): a backlog
            batcher.add([ev(serial + i, c, at=arrived) for i, c in enumerate(campaigns[1:])])
            arrived, serial = arrived + 0.2, serial + 3
        due = {c for c, q in batcher._queues.items() if batcher._is_due(q, now)}
        batch = batcher.take()
        assert batch is not None
        order.append(batch.campaign_id)
        sent.append(batch)
        for campaign in due - {batch.campaign_id}:
            missed[campaign] += 1
            worst[campaign] = max(worst[campaign], missed[campaign])
        missed[batch.campaign_id] = 0
    assert max(worst.values()) <= 2 * len(campaigns), f"slots waited while due: {worst}"
    # In the first bursts (20 slots at once) the ordinary campaigns run out of due events and the
    # phone takes the slots no one else needs. Once the budget is the bottleneck, every campaign
    # is due at every slot and each gets a quarter of the requests.
    shares = {c: order[300:].count(c) for c in campaigns}
    assert max(shares.values()) - min(shares.values()) <= 1, shares
    print({"requests, second half": shares, "most slots waited while due": worst})
    busy = [b for b in sent if b.campaign_id == "busy"]
    assert all(len(b) == 1 for b in busy)
    assert [b.events[0].offset for b in busy] == list(range(len(busy)))


def test_a_phone_s_backlog_takes_its_turns_one_event_per_request() -> None:
    clock = Clock()
    batcher = Batcher(100, 1.0, clock)
    batcher.add([ev(n, "busy", phone="+1", at=90.0) for n in range(50)])  # one phone, long due
    batcher.add([ev(100 + n, "A", at=90.5) for n in range(150)])
    taken = [batcher.take() for _ in range(5)]
    assert [(b.campaign_id, len(b)) for b in taken] == [  # type: ignore[union-attr]
        ("busy", 1), ("A", 100), ("busy", 1), ("A", 50), ("busy", 1)]
    assert [b.events[0].offset for b in taken if b.campaign_id == "busy"] == [0, 1, 2]  # type: ignore[union-attr]


def test_campaigns_take_turns_even_with_a_backlog() -> None:
    clock = Clock()
    batcher = Batcher(10, 1.0, clock)
    batcher.add([ev(n, "backlog", at=50.0) for n in range(100)])  # ten full requests, all old
    batcher.add([ev(1000 + n, "small", at=99.0) for n in range(3)])
    batcher.add([ev(2000 + n, "other", at=99.0) for n in range(3)])
    order = [batcher.take().campaign_id for _ in range(5)]  # type: ignore[union-attr]
    assert order == ["backlog", "small", "other", "backlog", "backlog"]


def test_revoking_a_phone_s_sendable_event_makes_its_next_one_sendable() -> None:
    batcher = Batcher(10, 0.0, Clock())
    batcher.add([ev(1, phone="+1", partition=1), ev(2, phone="+1", partition=0), ev(3, phone="+1", partition=0)])
    dropped = batcher.drop(lambda e: e.tp == ("t", 1))
    assert [e.offset for e in dropped] == [1] and batcher.buffered == 2
    assert [e.offset for e in batcher.take().events] == [2]  # type: ignore[union-attr]
    assert [e.offset for e in batcher.take().events] == [3]  # type: ignore[union-attr]
    assert batcher.take() is None


def test_a_campaign_that_empties_each_turn_does_not_jump_the_queue_when_it_returns() -> None:
    # Trickle campaigns are emptied by each of their requests, and refilled at once. Coming back,
    # they must not count as never served, or they would take every slot from the backlog.
    clock = Clock()
    batcher = Batcher(10, 1.0, clock)
    batcher.add([ev(n, "backlog", at=50.0) for n in range(200)])
    serial = 1000
    for i in range(2):
        batcher.add([ev(serial + i, f"trickle{i}", at=clock.now - 2)])
    order = []
    for _ in range(12):
        taken = batcher.take()
        assert taken is not None
        order.append(taken.campaign_id)
        if taken.campaign_id.startswith("trickle"):
            serial += 10
            batcher.add([ev(serial, taken.campaign_id, at=clock.now - 2)])
    assert order.count("backlog") == 4, order
