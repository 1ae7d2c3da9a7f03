"""A partition's marks load in pages by score (consumer/state/dead_letters.py `read_sets`) while the
previous owner, within its revoke grace, still removes the marks below its confirmed commits
(ZREMRANGEBYSCORE -inf (C). Every mark at or past the commit point must load: it is a record the
new owner reads again, and without its mark it would be judged again (a second outcome, a
second receipt).

Found by review: each page started at the last score read with LIMIT skip = the members of that
score read already; once a commit past that score removed them, the skip passed over the first
marks still there (page 3 of offsets 0..9, commit 5 between pages: offset 5 was not loaded)."""

from __future__ import annotations

import random
from typing import Any

from consumer.state.dead_letters import read_sets


def _bound(text: str) -> tuple[float, bool]:
    """A ZRANGEBYSCORE bound as Redis reads it: (score, exclusive)."""
    exclusive = text.startswith("(")
    return float(text[1:] if exclusive else text), exclusive


class SortedSets:
    """Redis's sorted sets as far as a load reads them (ZCARD, ZRANGEBYSCORE with LIMIT and scores),
    members of one score in their byte order as Redis keeps them; `between(step)` runs after each
    command's reply was made (the n-th command of the load), as another client's commands may run
    between two of ours, inside a pipeline too (no transaction)."""

    def __init__(self) -> None:
        self.sets: dict[str, dict[bytes, float]] = {}
        self.steps = 0
        self.between = lambda step: None

    def remove_below(self, key: str, offset: float) -> None:
        self.sets[key] = {m: s for m, s in self.sets.get(key, {}).items() if s >= offset}

    def pipeline(self, transaction: bool = False) -> Any:
        client, queued = self, []  # type: ignore[var-annotated]

        class Pipe:
            def zcard(self, key: str) -> None:
                queued.append(lambda: len(client.sets.get(key, {})))

            def zrangebyscore(self, key: str, low: str, high: str, start: int, num: int,
                              withscores: bool) -> None:
                (lo, lo_x), (hi, hi_x) = _bound(str(low)), _bound(str(high))

                def reply() -> list[tuple[bytes, float]]:
                    ordered = sorted(client.sets.get(key, {}).items(), key=lambda item: (item[1], item[0]))
                    inside = [(m, s) for m, s in ordered
                              if (s > lo if lo_x else s >= lo) and (s < hi if hi_x else s <= hi)]
                    return inside[start:start + num]

                queued.append(reply)

            def execute(self) -> list[Any]:
                replies = []
                for answer in queued:
                    replies.append(answer())
                    client.steps += 1
                    client.between(client.steps)
                return replies

        return Pipe()


def _offsets(members: list[tuple[Any, Any]]) -> list[int]:
    return sorted(int(m.split(b":")[0]) for m, _ in members)


def test_a_commit_landing_between_pages_loses_no_mark_past_it() -> None:
    client = SortedSets()
    client.sets["k"] = {f"{n}:f".encode(): float(n) for n in range(10)}
    client.between = lambda step: client.remove_below("k", 5) if step == 2 else None  # after the first page
    [members] = read_sets(client, ["k"], what="marks", tp=("t", 0), page=3)
    assert _offsets(members) == [0, 1, 2, 5, 6, 7, 8, 9]  # before: 5 was skipped


def test_a_run_of_one_score_past_pages_loads_whole_and_a_commit_past_it_skips_nothing() -> None:
    client = SortedSets()
    client.sets["k"] = {f"{n}:f{n}".encode(): 4.0 for n in range(7)} | {f"{n}:f".encode(): float(n) for n in (8, 9, 10)}
    [members] = read_sets(client, ["k"], what="marks", tp=("t", 0), page=3)
    assert len(members) == 10
    client.between = lambda step: client.remove_below("k", 9) if step == 3 else None
    [members] = read_sets(client, ["k"], what="marks", tp=("t", 0), page=3)
    assert {m for m, _ in members} >= {b"9:f", b"10:f"}


def test_every_mark_at_or_past_the_last_commit_loads_whatever_the_pages_and_the_commits() -> None:
    """Random sets (runs of one score, infinite and huge scores) and commits landing between any
    two round trips: every member at or past the highest commit is loaded, each once."""
    rng = random.Random(7)
    for _ in range(400):
        client = SortedSets()
        scores = [float(rng.randrange(30)) + rng.choice((0, 0, 3 / 16)) for _ in range(rng.randrange(1, 40))]
        scores += rng.choice(([], [float("inf")] * 3, [1e16, 1e16 + 2, float("-inf")]))
        client.sets["a"] = {f"{n}:{rng.randrange(99)}".encode(): s for n, s in enumerate(scores)}
        client.sets["b"] = {f"{n}:x".encode(): float(n) for n in range(rng.randrange(0, 12))}
        commits = sorted(rng.sample(range(40), 3))
        trips = rng.sample(range(1, 16), 3)
        point = [float("-inf")]

        def between(step: int, commits: list[int] = commits, trips: list[int] = trips,
                    client: SortedSets = client, point: list[float] = point) -> None:
            for commit, at in zip(commits, trips, strict=True):
                if step == at:
                    point[0] = max(point[0], commit)
                    for key in ("a", "b"):
                        client.remove_below(key, point[0])

        client.between = between
        expected = {key: dict(client.sets[key]) for key in ("a", "b")}
        got = read_sets(client, ["a", "b"], what="marks", tp=("t", 0), page=rng.choice((1, 2, 3, 5)))
        for key, members in zip(("a", "b"), got, strict=True):
            names = [m for m, _ in members]
            assert len(names) == len(set(names)), (key, names)
            wanted = {m for m, s in expected[key].items() if s >= point[0]}
            assert wanted <= set(names), (key, sorted(wanted - set(names)), point[0])
