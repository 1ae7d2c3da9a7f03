"""One consumer replica against the simulator: produce, run to the end of the topic, collect."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from consumer.ingest.samples import encode, phone_for, transaction
from consumer.simulator import SimulatorServer
from tests.conftest import Stack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, headers_of, produce, read_all
from tests.support.scenario import CAMPAIGNS, delivered_phones

RUN_TOKEN = "run-token-3c9e"


@dataclass
class Run:
    stack: Stack
    simulator: SimulatorServer
    tmp_path: Path
    processes: list[ConsumerProcess]
    token: str
    topic: str = ""
    dlq: str = ""
    group: str = ""
    replica: ConsumerProcess | None = None
    dead: list[Any] = field(default_factory=list)
    _next_phone: int = 0

    def events(self, count: int, campaign: str) -> list[tuple[bytes, bytes]]:
        """`count` valid events with ids and phones never used before in this run."""
        prefix = unique("e")
        numbers = range(self._next_phone, self._next_phone + count)
        self._next_phone += count
        return [(f"{prefix}-{n}".encode(), encode(transaction(f"{prefix}-{n}", phone_for(n), campaign, n=n)))
                for n in numbers]

    def start(self, records: Iterable[tuple[bytes | None, bytes | None]], partitions: int = 2,
              new_topics: Callable[..., str] | None = None, **settings: Any) -> ConsumerProcess:
        assert new_topics is not None
        self.topic, self.dlq, self.group = new_topics(partitions=partitions), new_topics("dlq"), unique("g")
        produce(self.stack.bootstrap, self.topic, records)
        env = consumer_env(bootstrap=self.stack.bootstrap, redis_url=self.stack.redis_url, topic=self.topic,
                           dlq=self.dlq, group=self.group, pisano_url=self.simulator.url, token=self.token,
                           **{"PISANO_BACKOFF_BASE_MS": 50, "PISANO_BACKOFF_MAX_MS": 500, **settings})
        self.replica = ConsumerProcess(env, self.tmp_path / f"{self.topic}.log").start()
        self.processes.append(self.replica)
        return self.replica

    def produce_more(self, records: Iterable[tuple[bytes | None, bytes | None]],
                     timestamp_ms: int | None = None) -> None:
        produce(self.stack.bootstrap, self.topic, records, timestamp_ms=timestamp_ms)

    def second_replica_after_new_records(self, first: ConsumerProcess, partitions: Iterable[int] = (0, 1),
                                         timeout: float = 60) -> ConsumerProcess:
        """On each partition a valid event and a record that is not Avro, then a replica with
        `first`'s settings, run until every record has an outcome (a partition never fetched
        fails here)."""
        for partition in partitions:
            produce(self.stack.bootstrap, self.topic, self.events(1, CAMPAIGNS[0]), partition=partition)
            produce(self.stack.bootstrap, self.topic, [(unique("bad").encode(), b"\x00not avro\xff")],
                    partition=partition)
        second = ConsumerProcess(first.env, self.tmp_path / "second.log").start()
        self.processes.append(second)
        self.replica = second
        self.wait_all_committed(timeout)
        return second

    def wait_all_committed(self, timeout: float = 90) -> None:
        ends = end_offsets(self.stack.bootstrap, self.topic)
        wait_until(lambda: all_committed(self.stack.bootstrap, self.group, self.topic, ends), timeout,
                   "every record has an outcome")

    def finish(self, dead_letters: int | None = None) -> None:
        self.wait_all_committed()
        assert self.replica is not None
        assert self.replica.terminate() == 0, self.replica.log_tail()
        # The whole topic: the replica has exited, so every dead-letter it wrote is in. (Reading only
        # until `dead_letters` were found saw nothing at all for 0, and never one too many.)
        self.dead = read_all(self.stack.bootstrap, self.dlq)
        if dead_letters is not None:
            assert len(self.dead) == dead_letters, \
                f"{len(self.dead)} dead-letters, expected {dead_letters}: {[headers_of(m) for m in self.dead][:3]}"

    def delivered(self) -> Counter[str]:
        path = self.simulator_log
        return delivered_phones(path)

    @property
    def simulator_log(self) -> Path:
        path = self.simulator.state.config.delivery_log_path
        assert path is not None
        return path

    def dead_headers(self) -> list[dict[str, str]]:
        return [headers_of(m) for m in self.dead]

    def faults(self, **faults: Any) -> None:
        response = httpx.post(f"{self.simulator.url}/_sim/faults", json=faults, timeout=5)
        response.raise_for_status()

    def sim_config(self, **config: Any) -> None:
        httpx.post(f"{self.simulator.url}/_sim/config", json=config, timeout=5).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.simulator.url}/_sim/requests", timeout=10).json())
