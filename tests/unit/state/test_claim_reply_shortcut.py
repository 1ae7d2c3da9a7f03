"""Reading lua/claim.lua's reply without Redis: the whole-answer shortcut for a request whose ids
are all claimed says yes exactly when the full reading would find every id claimed."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.errors import StateStoreError
from consumer.state.dedup import ClaimStatus, _all_claimed, parse_statuses


@pytest.mark.parametrize("reply, expected", [
    ([b"CCC"], 3), (["CCC"], 3), ((b"CCC",), 3), ([b"CCC", b"extra"], 3),  # all claimed
    ([b"CC"], 3), ([b"CCCC"], 3), ([b"CDC"], 3), ([b"CUC", b"a1|x"], 3), ([b"CHC"], 3),  # not
    ([], 3), (None, 3), (b"CCC", 3), ([b""], 1),  # malformed: left to parse_statuses
])
def test_the_shortcut_agrees_with_the_full_reading(reply: Any, expected: int) -> None:
    try:
        full = parse_statuses(reply, expected)
        every_id_claimed = all(s is ClaimStatus.CLAIMED for s in full) and len(full) == expected
    except StateStoreError:
        every_id_claimed = False
    assert _all_claimed(reply, expected) is every_id_claimed
