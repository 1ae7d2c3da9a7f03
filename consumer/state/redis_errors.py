"""What a Redis error means for the on-call engineer: what happened and what to do.

Only an error without an answer (no connection, a timeout, a cluster slot without a master) is
"unreachable". A Redis that answered with an error is reachable, and the network is the wrong
place to look: a replica refuses writes (READONLY), a full Redis refuses them (OOM), a key of the
consumer's key space holds what another writer put there (WRONGTYPE, a script's Lua error), the
ACL forbids a command (NOPERM). Every answer still fails closed (StateStoreError): only the
words differ. The client's own text is kept for the details, as a log line shows it: any URL
credentials masked, any phone number redacted.
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException

from consumer.errors import OversizeStateError, StateStoreError
from consumer.operations.logs import redact_text

MAX_CAUSE_CHARS = 300

_FOREIGN_KEY = ("a key under REDIS_KEY_PREFIX holds a value this consumer did not write (set by hand, or by "
                "another program or version sharing the prefix): delete that key, or give this fleet a "
                "REDIS_KEY_PREFIX of its own")


def describe(exc: BaseException, what: str) -> str:
    """One line: what happened to `what` (e.g. "the throttle"), the client's words, what to do."""
    problem, advice = _meaning(exc)
    cause = redact_text(f"{type(exc).__name__}: {exc}")[:MAX_CAUSE_CHARS]
    return f"Redis {problem} for {what} ({cause}): {advice}"


def _meaning(exc: BaseException) -> tuple[str, str]:
    """(what happened, what to do), by the error's class, else by the reply's first word."""
    # Subclasses of ConnectionError that mean Redis answered: before ConnectionError itself.
    if isinstance(exc, (redis.AuthenticationError, redis.exceptions.AuthorizationError)):
        return "refused the credentials", "check the user and password in REDIS_URL (or its secret)"
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return ("refused a command (ACL)", "allow the REDIS_URL user the consumer's commands in its ACL "
                "(scripts: +@scripting, and the keys ~<REDIS_KEY_PREFIX>*)")
    if isinstance(exc, redis.BusyLoadingError):
        return "is loading its data set", "wait until it has loaded"
    if isinstance(exc, redis.exceptions.MaxClientsReachedError):
        return ("refused the connection (maxclients reached)",
                "raise Redis's maxclients or find the client holding connections")
    if isinstance(exc, redis.exceptions.ClusterDownError):
        return ("cluster cannot serve the key's slot", "a failover may be under way and end by itself; if it lasts, "
                "check the cluster (CLUSTER INFO, a master without a replica)")
    if isinstance(exc, redis.exceptions.TryAgainError) or (
            isinstance(exc, redis.exceptions.ClusterError) and "TTL exhausted" in str(exc)):
        # Redis answered, redirecting the call again and again: a multi-key call (a dedup bucket's,
        # consumer/state/dedup_layout.py `reshard_guard`) while its slot moves between masters
        return ("cluster is moving the key's slot between masters (resharding)", "wait: it ends when the slot's "
                "move ends; if it lasts, look for a slot left migrating or importing (CLUSTER NODES) and "
                "finish its move (redis-cli --cluster fix)")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, RedisClusterException)):
        return ("unreachable",
                "check that Redis is up, REDIS_URL and the network")
    if isinstance(exc, redis.ReadOnlyError):
        return ("refused a write (read-only replica)", "REDIS_URL points at a replica, or a failover demoted "
                "its master: point REDIS_URL at the master (a cluster: REDIS_CLUSTER=true)")
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return ("is full (maxmemory reached, writes refused)", "raise Redis's maxmemory or free memory "
                "(watch pisano_sms_redis_memory_used_ratio); never allow eviction")
    if isinstance(exc, redis.exceptions.NoScriptError):
        return ("lost the script again right after it was loaded", "something flushes Redis's scripts "
                "(SCRIPT FLUSH) or a proxy spreads the calls over several servers: point REDIS_URL at Redis itself")
    text = _reply(exc)
    first_word = text.split(" ", 1)[0]
    if first_word == "WRONGTYPE":
        return "found a key of the wrong type", _FOREIGN_KEY
    if first_word == "BUSY":
        return ("is busy running a script", "wait; if it lasts, find the long script (SLOWLOG GET) and stop it "
                "with SCRIPT KILL")
    if "user_script" in text or "Error running script" in text:
        return "script failed", f"{_FOREIGN_KEY}; if no such key is found, report the error with this message"
    if isinstance(exc, redis.ResponseError):
        return "refused a command", "the reply says why; fix that in Redis"
    if isinstance(exc, redis.exceptions.InvalidResponse):  # not Redis's protocol: another server, or TLS
        return "did not answer in Redis's protocol", "check REDIS_URL: its host and port, and rediss:// for TLS"
    return "call failed", "report it with this message: the client refused the call before sending it"


_PIPELINE_NOTE = " of pipeline caused error: "


def _reply(exc: BaseException) -> str:
    """The error's text as Redis wrote it: redis-py puts a pipeline's failed command before it
    ("Command # 1 (ZMSCORE ...) of pipeline caused error: WRONGTYPE ..."), and its first word is
    what says what happened."""
    text = str(exc)
    return text.rpartition(_PIPELINE_NOTE)[2] if isinstance(exc, redis.ResponseError) else text


def foreign_value(exc: BaseException | None) -> bool:
    """Whether Redis answered that a key of ours holds what this consumer did not write (WRONGTYPE,
    a script failing on it): Redis is there, and waiting for it ends nothing; someone must delete
    the key. Not a refusal Redis names itself (READONLY, OOM, NOSCRIPT: their own classes), which
    stops the senders' claims too and ends when Redis is fixed."""
    if type(exc) is not redis.ResponseError:
        return False
    reply = _reply(exc)
    first_word = reply.split(" ", 1)[0]
    return first_word == "WRONGTYPE" or (first_word != "BUSY" and ("user_script" in reply
                                                                  or "Error running script" in reply))


def passes(exc: BaseException) -> bool:
    """Whether a store's failure may end by waiting: a StateStoreError for an outage, or a refusal
    Redis names itself (READONLY, OOM, ...). Not a key of ours holding what we did not write
    (`foreign_value`), or more than we ever write there (`OversizeStateError`), nor anything but a
    StateStoreError (a stored value the store could not read): the same answer would come back for
    ever, so a caller holding work for it would hold it for good (the dead-letter and receipt
    marks: consumer/outcomes/owned_marks.py)."""
    return isinstance(exc, StateStoreError) and not isinstance(exc, OversizeStateError) \
        and not foreign_value(exc.__cause__)
