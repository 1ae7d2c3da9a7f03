"""What a replica knows of the fleet's pause (`RedisLimiter.paused_until_ms`) when calls cross (h-pause).

Found by review: the pause's end was taken from whichever reply came back last. A reply to a call
Redis ran before this replica's own pause (another thread's reservation, the heartbeat) often comes
back after the pause's own reply, and put the older end back, until the next reply (about a second):
a request holding a slot inside the pause then left into it. And a pause by one thread while the
heartbeat moved the limiter to another token's keys (`_follow_account`) paused the keys just left.
A stub client stands for Redis here, so that the calls can be made to cross at will.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from consumer.config.windows import parse_rate_limits
from consumer.state.limiter import RedisLimiter
from consumer.state.redis import AccountKey, Keys


class StubRedis:
    """acquire.lua and pause.lua as far as the pause goes: per meta key, its pause's end on a fixed
    clock. `during`: called while a script call is on its way (after Redis ran it, before its reply
    comes back), once per name."""

    NOW = 1_800_000_000_000

    def __init__(self) -> None:
        self.pause_until: dict[str, int] = {}
        self.during: dict[str, Callable[[], None]] = {}
        self.calls: list[tuple[str, str]] = []  # (script, meta key)
        self._names: dict[str, str] = {}

    def register_script(self, source: str) -> Any:
        name = "pause" if source.startswith("-- Pause") else "acquire" if source.startswith("-- Reserve") else "other"
        return SimpleNamespace(sha=hashlib.sha1(source.encode()).hexdigest(), script=source, name=name)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        name = self._names[sha]
        meta, args = keys_and_args[1], keys_and_args[numkeys:]
        self.calls.append((name, meta))
        if name == "pause":
            self.pause_until[meta] = max(self.pause_until.get(meta, 0), self.NOW + int(args[0]))
            reply: Any = [self.pause_until[meta], self.NOW]
        else:
            reply = [2 if args[5] == 0 else 1, 0, "epoch", self.NOW, 1, "", self.NOW, 0,
                     self.pause_until.get(meta, 0)]
        hook = self.during.pop(name, None)
        if hook is not None:
            hook()
        return reply


def _limiter(client: StubRedis) -> RedisLimiter:
    original = client.register_script

    def register(source: str) -> Any:
        script = original(source)
        client._names[script.sha] = script.name
        return script

    client.register_script = register  # type: ignore[method-assign]
    return RedisLimiter(client, Keys("t"), "token", parse_rate_limits("10/1s"), margin_ms=0, horizon_ms=60_000)


def test_a_reply_to_a_call_redis_ran_before_our_pause_does_not_put_the_older_end_back() -> None:
    client = StubRedis()
    limiter = _limiter(client)
    # Another thread's 429 pauses the fleet while this thread's reservation, run by Redis before
    # the pause, is on its way back: its reply shows no pause, and comes back last.
    client.during["acquire"] = lambda: limiter.pause(3.0)
    limiter.acquire()
    assert limiter.paused_until_ms() == StubRedis.NOW + 3000, "the older reply put the pause's end back"
    # A call sent after that shows what Redis holds, whatever it is (a clock stepped back cuts it).
    client.pause_until = {meta: until - 1000 for meta, until in client.pause_until.items()}
    limiter.heartbeat()
    assert limiter.paused_until_ms() == StubRedis.NOW + 2000


def test_a_pause_across_a_move_to_another_tokens_keys_pauses_the_keys_the_fleet_counts_on() -> None:
    client = StubRedis()
    limiter = _limiter(client)
    old_meta = limiter._keys[1]
    recorded = AccountKey("f" * 16)
    account = SimpleNamespace(follow=lambda fingerprint: recorded, destination="default")
    # The heartbeat follows the destination's record to another fingerprint while the 429's pause
    # is on its way to the old keys.
    client.during["pause"] = lambda: limiter._follow_account(account)  # type: ignore[arg-type]
    limiter.pause(3.0)
    new_meta = limiter._keys[1]
    assert new_meta != old_meta
    assert client.pause_until.get(new_meta) == StubRedis.NOW + 3000, "the fleet's keys were not paused"
    assert limiter.paused_until_ms() == StubRedis.NOW + 3000
