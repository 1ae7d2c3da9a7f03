"""`app.build_pipeline` without Redis or a schema registry, for unit tests of what it wires."""

from __future__ import annotations

from unittest import mock

import pytest

import consumer.app
from consumer.app import State
from consumer.state.redis import Keys


def stand_in_state(monkeypatch: pytest.MonkeyPatch) -> mock.MagicMock:
    """Redis (returned), its eviction check, the account record and the decoder stood in for."""
    redis = mock.MagicMock(name="redis")
    redis.get.return_value = None
    redis.time.return_value = (1_800_000_000, 0)
    monkeypatch.setattr(consumer.app, "build_state", lambda settings: State(redis, Keys("p")))
    monkeypatch.setattr(consumer.app, "require_noeviction", lambda client, allow: None)
    monkeypatch.setattr(consumer.app, "account_key", lambda client, keys, name, token: token)
    monkeypatch.setattr(consumer.app, "build_decoder", lambda *args: mock.MagicMock(name="decoder"))
    return redis
