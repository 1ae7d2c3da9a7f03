"""Review of 49e958e: reserve_phones.lua's optional block of earlier attempts' tags (ARGV[4+N+i]),
read right for many phones over many buckets (one call per bucket on a cluster), each call
mixing replays, tags and plain phones; the memory twin answers the same."""

from __future__ import annotations

import random

from consumer.state.cooldown import PhoneFate, PhoneRequest
from tests.contract.test_cooldown_contract import DAY, codes, key


def test_tags_and_replays_over_many_buckets(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    a, b = make_cooldown(2)
    lost, live, gone = "a|lost", "b|live", "a|gone"
    a.reserve(lost, [PhoneRequest(key(n)) for n in range(100)], window_ms=DAY)
    b.reserve(live, [PhoneRequest(key(n)) for n in range(100, 200)], window_ms=DAY)
    a.reserve(gone, [PhoneRequest(key(n)) for n in range(200, 300)], window_ms=DAY)
    a.settle(PhoneFate.UNKNOWN, gone, [key(n) for n in range(200, 300)])
    asked: list[tuple[PhoneRequest, str]] = []
    for n in range(100):
        asked.append((PhoneRequest(key(n), None, ("x|1", lost) if n % 2 else (lost,)), "R"))
        asked.append((PhoneRequest(key(100 + n), None, (lost,)), "H"))  # someone else's live reservation
        if n % 3 == 0:
            asked.append((PhoneRequest(key(200 + n), gone), "R"))  # a replay of the named attempt
        else:  # an unknown contact is never taken over by a tag, only overridden by its replay
            asked.append((PhoneRequest(key(200 + n), "someone|else", (gone,) if n % 3 == 1 else ()), "C"))
        asked.append((PhoneRequest(key(300 + n), "z|3" if n % 4 == 0 else None, ("w|4",) if n % 5 == 0 else ()), "R"))
    random.Random(7).shuffle(asked)
    found = a.reserve("a|next", [r for r, _ in asked], window_ms=DAY)
    assert codes(found) == "".join(want for _, want in asked)
