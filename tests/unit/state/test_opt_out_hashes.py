"""The opt-out list's entries are HMAC-SHA256 of the canonical value, whatever the key's length
(consumer/state/suppression.py computes it with precomputed pads, for speed)."""

from __future__ import annotations

import hmac

import pytest

from consumer.state.suppression import OptOutHasher


@pytest.mark.parametrize("key", [b"sixteen-chars-ok", b"k" * 64, b"a-much-longer-key-" * 8])
def test_entries_are_hmac_sha256_cut_to_128_bits(key: bytes) -> None:
    hasher = OptOutHasher(key, "TR")
    expected = hmac.new(key, b"p:+905321234567", "sha256").hexdigest()[:32]
    assert hasher.phone("0532 123 45 67") == hasher.phone("+90 532 123 4567") == f"p:{expected}"
    assert hasher.canonical_phone("+905321234567") == f"p:{expected}"
    assert hasher.external_id(" C-1042 ") == "x:" + hmac.new(key, b"x:C-1042", "sha256").hexdigest()[:32]
