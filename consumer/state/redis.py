"""The Redis connection, the key names, and the Lua scripts, in one place.

Every key starts with a hash tag, so a Redis Cluster keeps the keys one script touches in one
slot: `{<prefix>:d:<bucket>:<n>}` for each dedup bucket (spread over the slots:
consumer/state/dedup_layout.py), `{<prefix>:rl:<token fingerprint>}` for a token's limiter and
circuits, `{<prefix>}` for the dedup layout, the dead-letter marks and 0.2.0's dedup marks.
Tokens never appear in keys, only a SHA-256 fingerprint.

redis-py's automatic retries are off: a command retried after a lost reply could apply twice
(reserve two throttle slots); callers retry explicitly, with scripts written to be idempotent
where it matters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from consumer.errors import StateStoreError
from consumer.plain_number import plain_number
from consumer.state.redis_errors import describe

SOCKET_TIMEOUT_S = 2.0  # REDIS_TIMEOUT_MS's default
MAX_STORED_DIGITS = 18  # offsets, milliseconds and codes: all below 10**18
# What a Redis call raises when Redis (or a cluster slot) is not available. Cluster errors such as
# SlotNotCoveredError during a failover do not derive from RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """The one place where Redis's exceptions become the project's StateStoreError.

    Callers fail closed on StateStoreError (no slot, no claim: no send) and try again later. The
    message says what happened, "unreachable" only when Redis did not answer (redis_errors.py)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StateStoreError(describe(exc, what)) from exc


def stored_text(raw: Any) -> str:
    """A value read back from Redis as text. Anything may be there (a key written by hand, by
    another version, by a bug): bytes that are not UTF-8 are replaced, never raised out of the
    poll loop or a sender turn."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def stored_number(text: str | None) -> int | None:
    """A number read back from Redis; None when absent or malformed (`plain_number`: ASCII digits
    only, and few enough that int() takes them)."""
    return plain_number(text, MAX_STORED_DIGITS) if text else None


def connect(url: str, *, cluster: bool = False, timeout_s: float = SOCKET_TIMEOUT_S) -> Any:
    """A client for REDIS_URL (redis://, rediss:// for TLS, user:password@ for ACL users)."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 15,
        "client_name": "pisano-sms",
    }
    if cluster:
        return redis.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def token_fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class AccountKey(str):
    """A token fingerprint already chosen for a destination (consumer/state/accounts.py): the key
    methods below, given one in place of a token, use it as it is."""


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def event(self, event_id: str) -> str:
        """An event's dedup mark as 0.2.0 wrote it: read, never written, for one horizon after the
        upgrade (consumer/state/dedup.py)."""
        return f"{{{self.prefix}}}:e:{event_id}"

    def dedup_bucket(self, bucket: int, candidate: int) -> str:
        """A dedup bucket's hash tag; its slice hashes are `<tag>:<slice>` (dedup_layout.py picks
        the candidate that puts the bucket in its share of the cluster slots)."""
        return f"{{{self.prefix}:d:{bucket}:{candidate}}}"

    def phone_bucket(self, bucket: int, candidate: int) -> str:
        """A contact cooldown bucket's hash tag; its phones' keys are `<tag>:cd:<keyed hash>`
        (consumer/state/cooldown.py picks the candidate, as the dedup buckets' are picked)."""
        return f"{{{self.prefix}:p:{bucket}:{candidate}}}"

    def dedup_layout(self) -> str:
        return f"{{{self.prefix}}}:dedup:layout"

    def witnessed(self) -> str:
        """The stamp of the dedup and contact state kept by the replica that compared it last with
        its group's commits (consumer/state/witness.py)."""
        return f"{{{self.prefix}}}:witnessed"

    def dedup_slices(self) -> str:
        """A SCAN pattern matching every dedup slice hash of the prefix."""
        return f"{{{self.prefix}:d:*"

    def dead_letter(self, topic: str, partition: int, offset: int) -> str:
        """The mark of a record dead-lettered already (consumer/state/dead_letters.py); in the
        dedup keys' slot, so one MGET reads a batch of them on a Redis Cluster too."""
        return f"{{{self.prefix}}}:dl:{topic}:{partition}:{offset}"

    def receipts(self, group: str, topic: str, partition: int) -> str:
        """The receipt marks of one partition for one group (consumer/state/receipt_marks.py)."""
        return f"{{{self.prefix}}}:rc:{group}:{topic}:{partition}"

    def limiter(self, token: str) -> tuple[str, str]:
        tag = self._token_tag(token)
        return f"{tag}:log", f"{tag}:meta"

    def circuit(self, token: str) -> tuple[str, str, str]:
        tag = self._token_tag(token)
        return f"{tag}:circuit", f"{tag}:circuit:cooldown", f"{tag}:circuit:probe"

    def campaign_circuit(self, token: str, campaign: str) -> tuple[str, str, str]:
        """One campaign's circuit at the token's account (campaign ids are UUIDs: safe in a key)."""
        tag = self._token_tag(token)
        return f"{tag}:cc:{campaign}", f"{tag}:cc:{campaign}:cooldown", f"{tag}:cc:{campaign}:probe"

    def clock_offset(self) -> str:
        """The shift of SEND_WINDOW_CLOCK=redis (consumer/state/clock.py), in ms: tests and demos only."""
        return f"{{{self.prefix}}}:clock:offset_ms"

    def account(self, destination: str) -> str:
        """The fingerprint a destination's state is keyed by, kept across token rotations."""
        return f"{{{self.prefix}}}:account:{destination}"

    def _token_tag(self, token: str) -> str:
        fingerprint = token if isinstance(token, AccountKey) else token_fingerprint(token)
        return f"{{{self.prefix}:rl:{fingerprint}}}"


def load_script(client: Any, name: str) -> Script:
    source = files("consumer.state").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return client.register_script(source)  # type: ignore[no-any-return]


class Call(NamedTuple):
    """One command of a shared pipeline: a script's EVALSHA (`script` set) or a plain `command`.
    On a cluster it goes to the node of its first key."""

    keys: list[str]
    args: list[Any]
    script: Script | None = None
    command: str = ""


def run_calls(client: Any, calls: Sequence[Call], *, cluster: bool, raise_errors: bool = True) -> list[Any]:
    """Run every call in one pipeline: one reply per call, in order; one network round trip on a
    single Redis, one per master on a cluster, sent to all of them before any reply is read.

    On a cluster each call goes to the node of its first key, named explicitly: redis-py's
    cluster pipeline refuses evalsha, and would ask a node for the keys of a raw EVALSHA (one
    more round trip each). A Redis that restarted, or a master just promoted, lacks a script:
    each script that answered NOSCRIPT is loaded (on every master) and the calls that answered it
    are run again, only those (the others ran). The first error among the replies is raised, or
    with `raise_errors` False left in its place (a caller whose calls stand each on its own)."""
    replies = _pipelined(client, calls, cluster)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        scripts = {script.sha: script for script in (calls[i].script for i in missing) if script is not None}
        for script in scripts.values():
            client.script_load(script.script)
        for i, reply in zip(missing, _pipelined(client, [calls[i] for i in missing], cluster), strict=True):
            replies[i] = reply
    for reply in replies if raise_errors else ():
        if isinstance(reply, Exception):
            raise reply
    return replies


def _pipelined(client: Any, calls: Sequence[Call], cluster: bool) -> list[Any]:
    pipe = client.pipeline() if cluster else client.pipeline(transaction=False)
    for call in calls:
        options: dict[str, Any] = {"target_nodes": client.get_node_from_key(call.keys[0])} if cluster else {}
        if call.script is not None:
            pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args, **options)
        else:
            pipe.execute_command(call.command, *call.keys, *call.args, **options)
    return list(pipe.execute(raise_on_error=False))
