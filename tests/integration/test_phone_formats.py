"""Phone formats end to end (issue 11, finding 8): what the simulator receives is the format the
mapping asks for, and a foreign customer's number never loses its country code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.config.resources import default_mapping_file
from consumer.ingest.samples import encode, transaction
from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, headers_of, produce, read_all
from tests.support.scenario import CAMPAIGNS, delivered_phones

TOKEN = "phone-format-token-2a"
TURKISH, TURKISH_NATIONAL, BRITISH = "+905321234567", "0532 123 45 67", "+447911123456"


def mapping(tmp_path: Path, phone_format: str, foreign: str) -> Path:
    text = default_mapping_file().read_text()
    text = text.replace("phone_format: e164 ", f"phone_format: {phone_format} ")
    text = text.replace("phone_foreign: e164 ", f"phone_foreign: {foreign} ")
    assert f"phone_format: {phone_format}" in text and f"phone_foreign: {foreign}" in text
    path = tmp_path / f"mapping-{phone_format}-{foreign}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("foreign", "expected", "dead"), [
    ("e164", {"5321234567", "5321234568", BRITISH}, 0),
    ("reject", {"5321234567", "5321234568"}, 1),
])
def test_national_significant_keeps_a_foreign_number_whole(  # type: ignore[no-untyped-def]
        stack: Stack, new_topic: Callable[..., str], tmp_path: Path, processes, foreign: str,
        expected: set[str], dead: int) -> None:
    topic, dlq, group = new_topic(), new_topic("dlq"), unique("g")
    prefix = unique("pf")
    phones = [TURKISH, TURKISH_NATIONAL.replace("67", "68"), BRITISH]
    produce(stack.bootstrap, topic, [(f"{prefix}-{n}".encode(), encode(transaction(f"{prefix}-{n}", phone,
                                                                                   CAMPAIGNS[0], n=n)))
                                     for n, phone in enumerate(phones)])
    log = tmp_path / "deliveries.jsonl"
    config = SimulatorConfig(tokens=frozenset({TOKEN}), any_campaign=True, rate_limits=(), delivery_log_path=log)
    with SimulatorServer(config) as simulator:
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=simulator.url, token=TOKEN, REDIS_KEY_PREFIX=unique("pf"),
                           MAPPING_FILE=str(mapping(tmp_path, "national_significant", foreign)))
        replica = ConsumerProcess(env, tmp_path / "replica.log").start()
        processes.append(replica)
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 60, "every record has an outcome")
        assert replica.terminate() == 0, replica.log_tail()
    assert set(delivered_phones(log)) == expected
    assert "07911123456" not in delivered_phones(log) and "7911123456" not in delivered_phones(log)
    letters = read_all(stack.bootstrap, dlq, expected=dead) if dead else []
    assert [headers_of(m)["dlq.reason"] for m in letters] == ["invalid_event"] * dead
