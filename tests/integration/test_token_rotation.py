"""Token rotation end to end (README, "Token rotation"): one replica reads its token from a Secret
mounted the kubelet's way; the Secret is updated in place twice (a good token, then a bad one)
while events flow. No request fails, the next requests carry the new token, a bad token is kept
out, and the throttle and circuit state stay where they were (not a fresh, empty limiter)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from consumer.simulator.redact import token_fingerprint as sim_fingerprint
from consumer.state.redis import token_fingerprint
from tests.support.consumers import wait_until
from tests.support.fakes import CAMPAIGN
from tests.support.runs import Run
from tests.unit.config.test_tokens import SecretVolume

OLD, NEW = "rotation-old-9d2c71", "rotation-new-4e8a05"


def test_a_rotated_token_file_is_used_without_a_restart_or_a_failed_request(
        run: Run, new_topic: Callable[..., str], redis_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run.sim_config(tokens=[OLD, NEW])  # Pisano accepts both while a token is rotated
    secret = tmp_path / "secret"
    secret.mkdir()
    volume = SecretVolume(secret, OLD + "\n")
    replica = run.start(run.events(200, CAMPAIGN), new_topics=new_topic, PISANO_API_TOKEN="",
                        PISANO_API_TOKEN_FILE=str(volume.path), PISANO_TOKEN_REFRESH_MS=100,
                        PISANO_RATE_LIMITS="1000/1s")
    run.wait_all_committed()
    assert {r["token"] for r in run.requests()} == {sim_fingerprint(OLD)}

    volume.update(NEW + "\n")
    wait_until(lambda: "changed; the next requests carry the new one" in replica.log_text(), 10, "rotation logged")
    run.sim_config(tokens=[NEW])  # the old token is revoked: a request carrying it would fail
    run.produce_more(run.events(200, CAMPAIGN))
    run.wait_all_committed()

    volume.update("a token with spaces\n")  # a bad update of the Secret: refused, the last good token stays
    wait_until(lambda: "still sending with the previous token" in replica.log_text(), 10, "refusal logged")
    run.produce_more(run.events(200, CAMPAIGN))
    run.finish(dead_letters=0)

    requests = run.requests()
    assert {r["http_status"] for r in requests} == {200}, "a request failed during the rotation"
    assert requests[-1]["token"] == sim_fingerprint(NEW)
    assert sum(run.delivered().values()) == 600 and set(run.delivered().values()) == {1}
    assert "a token with spaces" not in replica.log_text() and NEW not in replica.log_text()
    # The throttle state stayed with the destination: keyed by the token it started with.
    keys = {k.decode() for k in redis_client.scan_iter("*:rl:*")}
    assert keys and all(token_fingerprint(OLD) in k for k in keys), keys
    assert not [k for k in keys if token_fingerprint(NEW) in k]
    assert redis_client.get("{pisano-sms}:account:default") == token_fingerprint(OLD).encode()


def test_a_token_revoked_before_the_replica_saw_the_new_one_loses_no_event(
        run: Run, new_topic: Callable[..., str], tmp_path: Path) -> None:
    run.sim_config(tokens=[OLD])
    secret = tmp_path / "secret"
    secret.mkdir()
    volume = SecretVolume(secret, OLD)
    # Polled once an hour: only the refusal makes the replica read the Secret again.
    replica = run.start(run.events(100, CAMPAIGN), new_topics=new_topic, PISANO_API_TOKEN="",
                        PISANO_API_TOKEN_FILE=str(volume.path), PISANO_TOKEN_REFRESH_MS=3_600_000)
    run.wait_all_committed()
    volume.update(NEW)
    run.sim_config(tokens=[NEW])  # revoked at once: the next request carries a refused token
    run.produce_more(run.events(100, CAMPAIGN))
    run.finish(dead_letters=0)
    assert sum(run.delivered().values()) == 200 and set(run.delivered().values()) == {1}
    statuses = [r["http_status"] for r in run.requests()]
    # Each request in flight at the switch (several sender threads) is refused once, then resent.
    assert 401 in statuses and set(statuses) == {200, 401} and statuses[-1] == 200, statuses
    assert "the token has changed since: sending again with the new one" in replica.log_text()
