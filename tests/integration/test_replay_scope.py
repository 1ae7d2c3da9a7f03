"""Issue 11, finding 1: a replay may override only the unknown mark of the attempt an SRE checked.

An ambiguous dead-letter names the attempt whose unknown mark it left (`dlq.attempt.id`); `replay`
re-publishes that id signed (`dlq.replay.attempt`); the dedup lets the replay through over that
mark and no other. Here Pisano really delivers the requests whose answers are lost
(`hang_after_accept_rate`), so every override nobody checked shows up as a second SMS in the
simulator's delivery log."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.test_sre_replay import number, replay
from tests.support.consumers import wait_until
from tests.support.kafka import headers_of, read_all
from tests.support.runs import RUN_TOKEN, Run
from tests.support.scenario import CAMPAIGNS


def dead_letters(run: Run, expected: int) -> list[dict[str, str]]:
    found = read_all(run.stack.bootstrap, run.dlq, expected=expected, timeout=30)
    assert len(found) == expected, [headers_of(m).get("dlq.reason") for m in found]
    return [headers_of(m) for m in found]


def test_two_dlq_copies_of_one_ambiguous_event_replayed_send_at_most_once(
        run: Run, new_topic: Callable[..., str]) -> None:
    run.faults(hang_rate=1.0)  # Pisano never answers and delivers nothing
    [record] = run.events(1, CAMPAIGNS[0])
    run.start([record, record], partitions=1, new_topics=new_topic, PISANO_TIMEOUT_MS=1000)  # an upstream duplicate
    run.wait_all_committed()
    first = dead_letters(run, 2)
    assert [h["dlq.reason"] for h in first] == ["ambiguous", "ambiguous"]
    checked = first[0]["dlq.attempt.id"]
    assert first[1]["dlq.attempt.id"] == checked  # the second copy found the first one's mark

    # The SRE checks with Pisano: attempt `checked` delivered nothing, so both copies are replayed.
    # This time Pisano delivers and the answer is lost again.
    run.faults(hang_rate=0.0, hang_after_accept_rate=1.0)
    assert number(replay(run.stack, run.topic, run.dlq, "--reason", "ambiguous"), "replayed") == 2
    run.wait_all_committed()
    later = dead_letters(run, 4)[2:]
    assert [h["dlq.reason"] for h in later] == ["ambiguous", "ambiguous"]
    # Copy 1's replay left a new mark; copy 2 named the checked attempt, not that one: not sent.
    assert later[0]["dlq.attempt.id"] == later[1]["dlq.attempt.id"] != checked
    assert list(run.delivered().values()) == [1]  # one SMS
    run.faults(hang_after_accept_rate=0.0)
    run.finish(dead_letters=4)


def test_a_13001_duplicate_replayed_after_the_token_fix_does_not_override_its_siblings_unknown_mark(
        run: Run, new_topic: Callable[..., str]) -> None:
    run.faults(hang_after_accept_rate=1.0)  # delivered, the answer lost
    [record] = run.events(1, CAMPAIGNS[1])
    filler = run.events(1, CAMPAIGNS[0])
    replica = run.start([record], partitions=1, new_topics=new_topic, PISANO_TIMEOUT_MS=1000,
                        CIRCUIT_COOLDOWN_MS=8000, MAX_IN_FLIGHT_REQUESTS=1)
    run.wait_all_committed()
    assert dead_letters(run, 1)[0]["dlq.reason"] == "ambiguous"

    # The token is revoked: the next request opens the circuit; the upstream duplicate of the
    # event arrives while it is open and is dead-lettered with 13001, no claim taken.
    run.faults(hang_after_accept_rate=0.0, token_codes={RUN_TOKEN: 13001})
    run.produce_more(filler)
    run.wait_all_committed()
    run.produce_more([record])
    run.wait_all_committed()
    letters = dead_letters(run, 3)
    assert [(h["dlq.reason"], h.get("pisano.error.code")) for h in letters[1:]] == \
        [("pisano_error", "13001"), ("pisano_error", "13001")]
    assert "dlq.attempt.id" not in letters[2]

    # The token is fixed; once the circuit closed, the SRE replays 13001.
    run.faults(token_codes={})
    wait_until(lambda: "circuit CLOSED" in replica.log_text(), 60, "the circuit closed")
    assert number(replay(run.stack, run.topic, run.dlq, "--error-code", "13001"), "replayed") == 2
    run.wait_all_committed()
    last = dead_letters(run, 4)[3]
    # The duplicate found its sibling's unknown mark, which nobody checked: dead-lettered again,
    # naming that attempt, never sent.
    assert (last["dlq.reason"], last["dlq.attempt.id"]) == ("ambiguous", letters[0]["dlq.attempt.id"])
    assert sorted(run.delivered().values()) == [1, 1]  # the event once (the lost answer), the filler once
    run.finish(dead_letters=4)
