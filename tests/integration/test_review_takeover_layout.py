"""Review of 49e958e: claim.lua's new per-bucket block (e pairs: the earlier attempts' tags)
between the replays' k pairs and 0.2.0's marks ('k' read by the script on a single Redis, 'a'
passed as arguments on a cluster), read right for hundreds of ids over many buckets, each bucket
mixing replays, tags, 0.2.0 marks and plain ids. A misaligned block would read a tag as an
override, a 0.2.0 value as a tag, or shift the indexes."""

from __future__ import annotations

import random
import time

import pytest

from consumer.state.dedup import ClaimRequest, RedisDedup, Settlement
from consumer.state.redis import Keys
from tests.conftest import flushed_client

OLD = "0ld0wner000|0000000a"  # an attempt of 0.2.0's time


@pytest.mark.parametrize("variant", ["redis", "cluster"])
def test_tags_replays_and_0_2_0_marks_in_one_claim_over_many_buckets(request: pytest.FixtureRequest,
                                                                     variant: str) -> None:
    client = flushed_client(request, variant)
    keys = Keys("rv")
    now = int(time.time() * 1000)
    legacy = {f"old-claim-{i}": f"c|{OLD}|{now}" for i in range(20)}  # live claims of 0.2.0's attempt
    legacy |= {f"old-unknown-{i}": f"u|{OLD}" for i in range(20)}
    legacy |= {f"old-done-{i}": "d" for i in range(20)}
    for name, value in legacy.items():
        client.set(keys.event(name), value, px=3_600_000)
    dedup = RedisDedup(client, keys, lease_ms=60_000, horizon_s=3600)
    other = RedisDedup(client, keys, lease_ms=60_000, horizon_s=3600)  # another replica
    lost, live, gone = dedup.new_tag(), other.new_tag(), dedup.new_tag()
    dedup.claim(lost, [ClaimRequest(f"lost-{i}") for i in range(100)])
    other.claim(live, [ClaimRequest(f"live-{i}") for i in range(100)])
    dedup.claim(gone, [ClaimRequest(f"unk-{i}") for i in range(100)])
    dedup.settle(Settlement.UNKNOWN, gone, [f"unk-{i}" for i in range(100)])

    asked: list[tuple[ClaimRequest, str]] = []
    for i in range(100):
        asked.append((ClaimRequest(f"lost-{i}", None, ("x|1", lost) if i % 2 else (lost,)), "C"))
        asked.append((ClaimRequest(f"live-{i}", None, (lost,)), "H"))  # someone else's live claim
        if i % 3 == 0:
            asked.append((ClaimRequest(f"unk-{i}", gone), "C"))  # a replay of the named attempt
        elif i % 3 == 1:
            asked.append((ClaimRequest(f"unk-{i}", None, (gone,)), "C"))  # the attempt's own mark, taken over
        else:
            asked.append((ClaimRequest(f"unk-{i}", "someone|else", ("y|2",)), "U"))
        asked.append((ClaimRequest(f"free-{i}", "z|3" if i % 4 == 0 else None, ("w|4",) if i % 5 == 0 else ()), "C"))
    for i in range(20):
        asked.append((ClaimRequest(f"old-claim-{i}", None, (OLD,) if i % 2 else ()), "C" if i % 2 else "H"))
        asked.append((ClaimRequest(f"old-unknown-{i}", OLD if i % 2 else None, () if i % 2 else (OLD,)), "C"))
        asked.append((ClaimRequest(f"old-done-{i}", None, (OLD,)), "D"))
    random.Random(7).shuffle(asked)
    found = dedup.claim(dedup.new_tag(), [request for request, _ in asked])
    wrong = {r.event_id: (s.value, want) for (r, want), s in zip(asked, found, strict=True) if s.value != want}
    assert not wrong
