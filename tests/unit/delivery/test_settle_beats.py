"""While a request's outcome is being recorded through a Redis outage (`Claim._record`, retried for
up to about a minute), the batch's other claims (bisection's groups not sent yet) are kept alive
by its heartbeat, as in every other wait of the batch (consumer/delivery/heartbeat.py)."""

from __future__ import annotations

import threading
import time

from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, StateStoreError
from consumer.state.dedup import ClaimRequest, ClaimStatus, Settlement
from consumer.state.memory import MemoryDedup
from tests.support.fakes import FakePisano, event, rig

LEASE_MS = 400  # beats every 0.1 s
OK = Accepted(200, "req", 0.01)


def test_recording_an_outcome_through_an_outage_keeps_the_other_groups_claims_alive() -> None:
    bad = event(4).recipient.phone
    refuse = lambda phones: PisanoApiError(422, 13028, "Invalid parameters") if bad in phones else OK  # noqa: E731
    r = rig(FakePisano(default=refuse), dedup=MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600))
    real_settle = r.dedup.settle
    failures = {"left": 3}  # 0.2 + 0.4 + 0.8 s of retries (REDIS_BACKOFF), three leases

    def settle(outcome, tag, ids):  # type: ignore[no-untyped-def]
        if outcome is Settlement.DELIVERED and failures["left"]:
            failures["left"] -= 1
            raise StateStoreError("a master is failing over")
        real_settle(outcome, tag, ids)

    r.dedup.settle = settle  # type: ignore[method-assign]
    seen: dict[str, ClaimStatus] = {}
    other = r.dedup.replica()

    def claim_elsewhere() -> None:  # while the first half's delivery is being recorded
        time.sleep(0.9)
        seen["e3"] = other.claim(other.new_tag(), [ClaimRequest("e3")])[0]

    threading.Thread(target=claim_elsewhere, daemon=True).start()
    r.process([event(i) for i in range(1, 5)])
    assert seen == {"e3": ClaimStatus.HELD}, "a claim of a group not yet sent lapsed while an outcome was recorded"
    assert r.kinds() == {"e1": {"delivered"}, "e2": {"delivered"}, "e3": {"delivered"}, "e4": {"dead_letter"}}
    assert r.dedup.state("e1") == "d" and r.dedup.state("e3") == "d"
