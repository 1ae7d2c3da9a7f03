"""Token rotation (README, "Token rotation"): a mounted Secret updated in place, a token provider,
bad new tokens kept out, and a request in flight keeping the token it left with."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from consumer.config.destinations import destination_configs
from consumer.config.settings import Settings
from consumer.config.tokens import (
    RefreshingToken,
    StaticToken,
    TokenFile,
    load_token_provider,
    token_source,
)
from consumer.delivery.pisano import PisanoClient
from consumer.errors import ConfigError
from consumer.state.redis import AccountKey, Keys, token_fingerprint

OLD, NEW = "old-token-7f3a9c", "new-token-2b8d4e"
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


class SecretVolume:
    """A Secret mounted the way the kubelet does it: `token -> ..data/token`, `..data -> ..<version>`,
    and an update writes a new version directory and swaps `..data` atomically."""

    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self.version = 0
        self.update(token)
        (root / "token").symlink_to("..data/token")

    @property
    def path(self) -> Path:
        return self.root / "token"

    def update(self, content: str) -> None:
        self.version += 1
        version = self.root / f"..v{self.version}"
        version.mkdir()
        (version / "token").write_text(content)
        staging = self.root / "..data_tmp"
        staging.symlink_to(version.name)
        os.replace(staging, self.root / "..data")


def watched(volume: SecretVolume) -> RefreshingToken:
    source = RefreshingToken("retail", OLD, TokenFile(volume.path), f"the token file {volume.path}", 60)
    assert source.refresh() is False  # the first read finds the token it started with
    return source


def test_a_secret_updated_in_place_is_read_again(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path, OLD + "\n")
    source = watched(volume)
    assert source.refresh() is False and source.current() == OLD  # unchanged: not read again
    volume.update(NEW + "\n")
    assert source.refresh() is True
    assert source.current() == NEW and source.rotations == 1


def test_a_file_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(OLD)
    source = RefreshingToken("default", OLD, TokenFile(path), "PISANO_API_TOKEN_FILE", 60)
    source.refresh()
    path.write_text(NEW + "-longer")  # same inode, another size
    assert source.refresh() is True and source.current() == NEW + "-longer"


@pytest.mark.parametrize(("content", "problem"), [
    ("", "the token is empty"),
    ("two words", "holds a space"),
    ("x" * 70_000, "larger than 64 KiB"),
])
def test_a_bad_new_token_keeps_the_old_one_and_says_what_to_fix(tmp_path: Path, content: str, problem: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    volume = SecretVolume(tmp_path, OLD)
    source = watched(volume)
    with caplog.at_level(logging.WARNING, "consumer.config.tokens"):
        volume.update(content)
        assert source.refresh() is False
        assert source.refresh() is False
    assert source.current() == OLD
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # once per problem, not once per poll
    assert problem in warnings[0] and "still sending with the previous token" in warnings[0]
    assert "fix the secret" in warnings[0]
    if content:
        assert content[:20] not in warnings[0]  # the refused token is never shown
    volume.update(NEW)  # fixed: taken at once
    assert source.refresh() is True and source.current() == NEW


def test_a_missing_file_keeps_the_old_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    path.write_text(OLD)
    source = RefreshingToken("default", OLD, TokenFile(path), "PISANO_API_TOKEN_FILE", 60)
    path.unlink()
    assert source.refresh() is False and source.current() == OLD
    assert "could not read it (No such file or directory)" in caplog.text
    path.write_text(NEW)
    assert source.refresh() is True and source.current() == NEW


def test_the_watch_thread_takes_a_rotation_within_its_interval(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path, OLD)
    source = token_source("retail", OLD, token_file=volume.path, provider=None, interval_s=0.05)
    try:
        volume.update(NEW)
        deadline = time.monotonic() + 5
        while source.current() != NEW and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.current() == NEW
    finally:
        source.close()
    assert isinstance(token_source("d", OLD, token_file=None, provider=None, interval_s=1), StaticToken)


# A provider for the tests, named as PISANO_TOKEN_PROVIDER names one: module:callable.
VAULT: dict[str, object] = {}


def vault_provider(destination: str) -> str:
    value = VAULT[destination]
    if isinstance(value, BaseException):
        raise value
    return value  # type: ignore[return-value]


PROVIDER = f"{__name__}:vault_provider"


def test_a_provider_is_called_with_the_destination_and_errors_keep_the_last_token(
        caplog: pytest.LogCaptureFixture) -> None:
    VAULT.clear()
    VAULT["retail"] = OLD
    source = token_source("retail", OLD, token_file=None, provider=PROVIDER, interval_s=3600)
    try:
        assert isinstance(source, RefreshingToken)
        VAULT["retail"] = NEW
        assert source.refresh() is True and source.current() == NEW
        VAULT["retail"] = RuntimeError("vault sealed: s3cr3t-detail")
        assert source.refresh() is False and source.current() == NEW
        VAULT["retail"] = None  # not a str
        assert source.refresh() is False and source.current() == NEW
        VAULT["retail"] = "bad\ntoken"
        assert source.refresh() is False and source.current() == NEW
    finally:
        source.close()
    assert "RuntimeError" in caplog.text and "TypeError" in caplog.text and "line break" in caplog.text
    assert "s3cr3t-detail" not in caplog.text  # a provider's message may hold anything


def test_provider_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    VAULT.clear()
    VAULT.update(default=OLD, retail=NEW)
    settings = Settings(pisano_url="https://api.pisano.co", pisano_token_provider=PROVIDER,
                        destinations={"retail": {"url": "https://eu.pisano.co", "campaigns": [CAMPAIGN]}})
    configs = destination_configs(settings)
    assert configs["default"].token == OLD and configs["retail"].token == NEW
    with pytest.raises(ValueError, match="PISANO_TOKEN_PROVIDER gives every destination's token"):
        Settings(pisano_url="https://api.pisano.co", pisano_token_provider=PROVIDER, pisano_api_token=OLD)
    both = Settings(pisano_url="https://api.pisano.co", pisano_token_provider=PROVIDER,
                    destinations={"retail": {"url": "https://eu.pisano.co", "api_token": NEW}})
    with pytest.raises(ConfigError, match="remove api_token"):
        destination_configs(both)
    VAULT["retail"] = RuntimeError("down")
    with pytest.raises(ConfigError, match="for destination retail failed"):
        destination_configs(settings)
    with pytest.raises(ConfigError, match=r"no such provider in the entry point group pisano_sms\.token_providers"):
        load_token_provider("no-such-provider")
    with pytest.raises(ConfigError, match="cannot load it"):
        load_token_provider("no_such_module_xyz:get")


def test_a_destination_keeps_its_token_file_for_watching(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(OLD + "\n")
    settings = Settings(pisano_url="https://api.pisano.co", pisano_api_token_file=path,
                        destinations={"retail": {"url": "https://eu.pisano.co", "api_token_file": str(path)}})
    configs = destination_configs(settings)
    assert configs["default"].token_file == path and configs["retail"].token_file == path
    assert configs["retail"].token == OLD


def test_a_request_in_flight_keeps_its_token_and_the_next_carries_the_new_one(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path, OLD)
    source = watched(volume)
    seen: list[str] = []
    arrived, release = threading.Event(), threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if len(seen) == 1:
            arrived.set()
            assert release.wait(5)
        return httpx.Response(200, json={"status": "ok"})

    client = PisanoClient("https://pisano.test", source, timeout_s=5, connect_timeout_s=1, max_connections=2)
    client.http = httpx.Client(base_url="https://pisano.test", headers=client.http.headers,
                               transport=httpx.MockTransport(handler))
    first = threading.Thread(target=client.send, args=(CAMPAIGN, b'{"phone_numbers":["+905321234567"]}'))
    first.start()
    assert arrived.wait(5)
    volume.update(NEW)
    assert source.refresh() is True  # rotated while the first request is in flight
    release.set()
    first.join(5)
    client.send(CAMPAIGN, b'{"phone_numbers":["+905321234568"]}')
    assert seen == [f"Token token={OLD}", f"Token token={NEW}"]
    client.close()


def test_account_keys_use_a_recorded_fingerprint_as_it_is() -> None:
    keys = Keys("p")
    recorded = AccountKey(token_fingerprint(OLD))
    assert keys.limiter(recorded) == keys.limiter(OLD)
    assert keys.circuit(recorded) == keys.circuit(OLD)
    assert keys.campaign_circuit(recorded, CAMPAIGN) == keys.campaign_circuit(OLD, CAMPAIGN)
    assert keys.limiter(NEW) != keys.limiter(OLD)


class FakeRedis:
    """SET NX and GET, or down."""

    def __init__(self, down: bool = False) -> None:
        self.data: dict[str, bytes] = {}
        self.down = down

    def set(self, key: str, value: str, nx: bool = False) -> bool:
        import redis

        if self.down:
            raise redis.ConnectionError("Connection refused")
        if nx and key in self.data:
            return False
        self.data[key] = value.encode()
        return True

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)


def test_a_destination_keeps_the_account_of_its_first_token() -> None:
    from consumer.state.accounts import account_key

    client, keys = FakeRedis(), Keys("p")
    first = account_key(client, keys, "retail", OLD)
    assert first == token_fingerprint(OLD) and isinstance(first, AccountKey)
    assert account_key(client, keys, "retail", NEW) == first  # rotated, or a replica started after it
    assert keys.limiter(account_key(client, keys, "retail", NEW)) == keys.limiter(OLD)
    assert account_key(client, keys, "cards", NEW) == token_fingerprint(NEW)  # each destination its own


def test_redis_down_at_start_keys_by_the_current_token_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from consumer.state.accounts import account_key

    assert account_key(FakeRedis(down=True), Keys("p"), "retail", NEW) == token_fingerprint(NEW)
    assert "restart this replica once Redis answers" in caplog.text and NEW not in caplog.text


def test_a_token_refused_right_after_a_rotation_is_sent_again_with_the_new_one() -> None:
    from consumer.errors import PisanoApiError
    from tests.support.fakes import FakePisano, event, rig

    secret = {"token": OLD}
    source = RefreshingToken("default", OLD, lambda: secret["token"], "the token file", 3600)
    pisano = FakePisano([PisanoApiError(401, 13001, "Wrong authentication token")])
    pisano.tokens = source  # type: ignore[attr-defined]
    r = rig(pisano)
    secret["token"] = NEW  # the old token is revoked and the new one mounted before the poll saw it
    r.process([event(1), event(2)])
    assert r.kinds() == {"e1": {"delivered"}, "e2": {"delivered"}}
    assert len(pisano.requests) == 2 and source.current() == NEW
    assert r.sender.destination.circuit.state()[0] == "closed"

    # A refusal with no newer token opens the circuit as before: the token is really wrong.
    pisano.answers.append(PisanoApiError(401, 13001, "Wrong authentication token"))
    r.process([event(3)])
    assert r.reasons() == {"e3": "pisano_error"} and len(pisano.requests) == 3
    assert r.sender.destination.circuit.state()[0] == "open"
