"""A Redis error says what happened and what to do, never "unreachable" for a Redis that answered
(found by review: every error of the throttle script, READONLY, OOM, WRONGTYPE, a Lua error, was
reported as "Redis unreachable for ...", sending the on-call engineer to the network).

The errors are built the way redis-py's parser builds them from Redis's replies, so the classes
and texts are the ones a real Redis gives; tests/integration/test_redis_errors.py makes a real
Redis answer some of them."""

from __future__ import annotations

import pytest
import redis
from redis._parsers.base import BaseParser

from consumer.errors import StateStoreError
from consumer.state.redis import translated


def _message(exc: Exception) -> str:
    with pytest.raises(StateStoreError) as raised, translated("the throttle"):
        raise exc
    return str(raised.value)


def _reply(text: str) -> Exception:
    """The exception redis-py makes of an error reply."""
    return BaseParser.parse_error(text)


@pytest.mark.parametrize(("exc", "says"), [
    (redis.ConnectionError("Error 111 connecting to 10.0.0.5:6379. Connection refused."), "REDIS_URL"),
    (redis.TimeoutError("Timeout reading from socket"), "REDIS_URL"),
])
def test_no_answer_is_unreachable_and_names_redis_url(exc: Exception, says: str) -> None:
    message = _message(exc)
    assert message.startswith("Redis unreachable for the throttle") and says in message


@pytest.mark.parametrize(("reply", "says"), [
    ("READONLY You can't write against a read only replica. script: 1f2e, on @user_script:12.", "replica"),
    ("OOM command not allowed when used memory > 'maxmemory'. script: 1f2e, on @user_script:9.", "maxmemory"),
    ("WRONGTYPE Operation against a key holding the wrong kind of value script: 1f2e, on @user_script:4.",
     "REDIS_KEY_PREFIX"),
    ("ERR user_script:7: attempt to compare nil with number script: 1f2e, on @user_script:7.",
     "REDIS_KEY_PREFIX"),
    ("NOSCRIPT No matching script. Please use EVAL.", "SCRIPT FLUSH"),
    ("NOPERM User pisano has no permissions to run the 'evalsha' command", "ACL"),
    ("WRONGPASS invalid username-password pair or user is disabled.", "REDIS_URL"),
    ("LOADING Redis is loading the dataset in memory", "loading"),
    ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.", "busy"),
    ("CLUSTERDOWN The cluster is down", "cluster"),
])
def test_an_answer_is_not_unreachability_and_says_what_to_do(reply: str, says: str) -> None:
    message = _message(_reply(reply))
    assert "unreachable" not in message
    assert "the throttle" in message and says in message


@pytest.mark.parametrize("exc", [
    redis.exceptions.ClusterError("TTL exhausted."),  # redis-py's, after a call answered ASK and TRYAGAIN in turn
    _reply("TRYAGAIN Multiple keys request during rehashing of slot"),
])
def test_a_slot_being_resharded_is_named(exc: Exception) -> None:
    """Found with tests/contract/test_reshard_contract.py: a dedup call while its bucket's slot moves
    fails closed, and was reported as "the client refused the call before sending it"."""
    message = _message(exc)
    assert "unreachable" not in message and "resharding" in message and "CLUSTER NODES" in message


def test_the_credentials_a_client_error_quotes_are_masked() -> None:
    message = _message(redis.ConnectionError("Error connecting to redis://app:pw-secret-99@10.0.0.5:6379"))
    assert "pw-secret-99" not in message


def test_the_cause_stays_attached() -> None:
    cause = _reply("READONLY You can't write against a read only replica.")
    with pytest.raises(StateStoreError) as raised, translated("the claim"):
        raise cause
    assert raised.value.__cause__ is cause


def _in_pipeline(reply: str) -> Exception:
    """As redis-py raises a pipeline's failed reply: its command put before the text."""
    exc = _reply(reply)
    exc.args = (f"Command # 1 (ZMSCORE {{p:dl:g:dlq:t:0}} 5:1:abc) of pipeline caused error: {reply}",)
    return exc


@pytest.mark.parametrize(("reply", "foreign"), [
    ("WRONGTYPE Operation against a key holding the wrong kind of value", True),
    ("ERR user_script:7: attempt to compare nil with number script: 1f2e, on @user_script:7.", True),
    ("READONLY You can't write against a read only replica. script: 1f2e, on @user_script:12.", False),
    ("OOM command not allowed when used memory > 'maxmemory'. script: 1f2e, on @user_script:9.", False),
    ("NOSCRIPT No matching script. Please use EVAL.", False),
    ("NOPERM User pisano has no permissions to run the 'evalsha' command", False),
    ("LOADING Redis is loading the dataset in memory", False),
    ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.", False),
    ("CLUSTERDOWN The cluster is down", False),
])
def test_a_key_holding_what_we_did_not_write_is_told_from_a_refusal(reply: str, foreign: bool) -> None:
    """Found by review: the dead-letter marks wait for Redis when it cannot serve them, not when a
    key holds a foreign value (no wait ends that); in a pipeline, redis-py puts the command first."""
    from consumer.state.redis_errors import foreign_value

    assert foreign_value(_reply(reply)) is foreign and foreign_value(_in_pipeline(reply)) is foreign
    assert not foreign_value(redis.ConnectionError("Connection refused")) and not foreign_value(None)


def test_a_pipelines_wrong_type_says_what_to_do() -> None:
    assert "REDIS_KEY_PREFIX" in _message(_in_pipeline("WRONGTYPE Operation against a key holding the wrong kind of "
                                                       "value"))
