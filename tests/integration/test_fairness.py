"""Campaigns share the throttle's requests (issue 11, finding 7): one phone with hundreds of
queued events, and campaigns with a backlog, under Pisano's windows scaled 100 times faster, on a
real replica. Every campaign gets its turn while it has events; the phone's events leave one per
request, each exactly once."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from consumer.ingest.samples import encode, transaction
from tests.conftest import unique
from tests.support.runs import Run
from tests.support.scenario import CAMPAIGNS

BUSY_CAMPAIGN = "5d1c9a7e-2b0f-4c3a-8e61-0f4a2b9c7d13"
BUSY_PHONE = "+905559990001"
# One request each: 120 outlast the backlogs (60 requests, of which a fair share is a quarter
# theirs) and, produced first, would have taken the first 120 requests on the old batcher.
BUSY_EVENTS = 120
TURN = 4  # campaigns taking turns


def test_one_busy_phone_and_backlogs_share_the_requests_fairly(run: Run, new_topic: Callable[..., str]) -> None:
    prefix = unique("busy")
    # Produced first: on the old batcher this campaign always looked oldest and took every slot.
    busy = [(f"{prefix}-{n}".encode(), encode(transaction(f"{prefix}-{n}", BUSY_PHONE, BUSY_CAMPAIGN, n=n)))
            for n in range(BUSY_EVENTS)]
    ordinary = [r for campaign in CAMPAIGNS for r in run.events(400, campaign)]
    run.start(busy + ordinary, new_topics=new_topic, BATCH_MAX_RECIPIENTS=20, BATCH_MAX_WAIT_MS=200,
              PISANO_RATE_LIMITS="20/50ms,40/250ms,80/1250ms,160/6250ms", PISANO_RATE_MARGIN_MS=0)
    run.finish(dead_letters=0)

    delivered = run.delivered()
    assert delivered[BUSY_PHONE] == BUSY_EVENTS
    assert all(count == 1 for phone, count in delivered.items() if phone != BUSY_PHONE)
    assert len(delivered) == 1 + 3 * 400

    requests = [r for r in run.requests() if r["http_status"] == 200]  # oldest first
    order = [r["campaign_id"] for r in requests]
    assert all(r["recipients"] == 1 for r in requests if r["campaign_id"] == BUSY_CAMPAIGN)
    waits = {}
    for campaign in CAMPAIGNS:
        turns = [i for i, c in enumerate(order) if c == campaign]
        # From the start until its backlog (20 requests of 20) is gone, it never waits more than
        # two of its turns: at most 2 x 4 requests of the others between two of its own.
        waits[campaign] = max([turns[0] + 1] + [b - a for a, b in pairwise(turns)])
        assert waits[campaign] <= 2 * TURN, (campaign, waits[campaign], order[:60])
    last_ordinary = max(i for i, c in enumerate(order) if c != BUSY_CAMPAIGN)
    letters = {BUSY_CAMPAIGN: "x", **{c: "abc"[i] for i, c in enumerate(CAMPAIGNS)}}
    print("".join(letters[c] for c in order))  # e.g. abcaxbcabxacxbacxbcaxbcaxcba...xxxx
    print({"requests": len(order), "most requests between two turns": waits,
           "busy requests among the first": (order[:last_ordinary + 1].count(BUSY_CAMPAIGN), last_ordinary + 1)})
