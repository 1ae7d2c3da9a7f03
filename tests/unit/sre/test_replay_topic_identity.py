"""Where a replay resumes when its group's position was committed on another topic of the same
name (recreated) or its end moved back on the same topic (truncated): told by the topic id the
replay stores with its commits (consumer/sre/topic_identity.py), on the in-memory DLQ."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from consumer.cli import main
from consumer.sre.topic_identity import Start, decide, decoded, encoded
from tests.unit.sre.fake_dlq import Cluster, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records

# Topic ids as Kafka gives them (base64 of 16 bytes): decoded() takes nothing else for one.
ID_1, ID_OLD, ID_NEW = "u8w3vABRSkmr3PrDaPA7+g", "PEwG1+/5SPyHYsgCOc50QQ", "Hxl47b+kTRyN/T74L/cmlg"


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)


@pytest.mark.parametrize(("position", "stored", "current", "end", "start"), [
    (-1001, None, "a", 3, Start.RESUME),  # nothing committed
    (2, "a", "a", 3, Start.RESUME),
    (3, "a", "a", 3, Start.RESUME),
    (5, "a", "a", 3, Start.TRUNCATED),  # same topic, end moved back: an unclean leader election
    (5, "a", "b", 3, Start.RECREATED),
    (2, "a", "b", 7, Start.RECREATED),  # recreated and grown past the old position
    (5, None, "b", 3, Start.RECREATED),  # an old commit without an id: by offsets, as before
    (2, None, "b", 3, Start.RESUME),
    (5, "a", None, 3, Start.RECREATED),  # the broker did not say: by offsets
])
def test_the_start_is_decided_by_the_ids_and_by_offsets_only_without_them(
        position: int, stored: str | None, current: str | None, end: int, start: Start) -> None:
    assert decide(position, stored, current, end) is start


def test_the_metadata_is_read_back_and_other_tools_metadata_is_no_id() -> None:
    assert decoded(encoded("raSL+FsLRNyFFdmWDsLFiA")) == "raSL+FsLRNyFFdmWDsLFiA"
    assert decoded("") is None and decoded("raSL+FsLRNyFFdmWDsLFiA") is None and decoded(None) is None


def test_commits_carry_the_topic_id(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(dlq_records(2), topic_id=ID_1)
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert cluster.committed["g"] == 2 and decoded(cluster.committed_metadata["g"]) == ID_1


def test_a_truncated_partition_resumes_at_its_end_and_re_publishes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: an unclean leader election moved the end (5) back to 3 on the same topic;
    # taken for a recreated topic, the partition was read from 0 and its 3 records re-published.
    cluster = Cluster(dlq_records(3), committed={"g": 5}, committed_metadata={"g": encoded(ID_1)},
                      topic_id=ID_1)
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert cluster.published == []
    assert cluster.committed["g"] == 3 and decoded(cluster.committed_metadata["g"]) == ID_1
    warning = next(line for line in result.output.splitlines() if "warning" in line and "same topic" in line)
    assert "position 5" in warning and "end (3)" in warning and "re-published none" in warning
    assert "recreated" not in result.output
    # New records land at 3 and 4, below the old position: read, not skipped up to 5.
    cluster.records.extend(dlq_records(5)[3:])
    again = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert again.exit_code == 0, again.output
    assert [key for _, key, _, _ in cluster.published] == [b"evt-3", b"evt-4"]


def test_a_recreated_dlq_grown_past_the_old_position_is_read_from_its_beginning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: purged (recreated) and grown to 5 records before the next run, the DLQ
    # looked like the old one at position 2: records 0 and 1 of the new topic were skipped, silently.
    cluster = Cluster(dlq_records(5), committed={"g": 2}, committed_metadata={"g": encoded(ID_OLD)},
                      topic_id=ID_NEW)
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 5
    assert cluster.committed["g"] == 5 and decoded(cluster.committed_metadata["g"]) == ID_NEW
    warning = next(line for line in result.output.splitlines() if "warning" in line and "recreated" in line)
    assert "position 2" in warning and "topic id differs" in warning and "beginning" in warning


def test_a_commit_without_an_id_past_the_end_is_read_from_the_beginning_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(dlq_records(3), committed={"g": 5}, topic_id=ID_1)
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 3 and decoded(cluster.committed_metadata["g"]) == ID_1
    assert "was past its end (3): the topic was deleted and recreated (or truncated)" in " ".join(result.output.split())


class _Described:
    def __init__(self, topic_id: object) -> None:
        self.topic_id = topic_id

    def result(self, timeout: float = 0) -> _Described:
        return self


def _admin_giving(topic_id: object) -> object:
    class Admin:
        def describe_topics(self, topics: object, request_timeout: float = 0) -> dict[str, _Described]:
            return {"dlq": _Described(topic_id)}

    return Admin()


ZERO_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # str(Uuid(0, 0)): what librdkafka gives for a topic without an id


def test_a_broker_without_topic_ids_gives_no_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: a broker that keeps no topic ids (ZooKeeper clusters before IBP 2.8, Metadata
    # before v10) answers the zero id for every topic: stored and compared as an id, a purged and
    # recreated DLQ (same "id", position past its end) was taken for a truncated one and resumed at
    # its end: every record of the new topic skipped, silently, with a warning saying nothing was lost.
    from confluent_kafka import Uuid

    import consumer.sre.topic_identity as topic_identity

    assert str(Uuid(0, 0)) == ZERO_ID
    monkeypatch.setattr(topic_identity, "make_admin", lambda settings: _admin_giving(Uuid(0, 0)))
    assert topic_identity.topic_id_of(object(), "dlq") is None  # type: ignore[arg-type]
    monkeypatch.setattr(topic_identity, "make_admin", lambda settings: _admin_giving(Uuid(7, 9)))
    assert topic_identity.topic_id_of(object(), "dlq") == str(Uuid(7, 9))


def test_a_stored_zero_id_or_a_malformed_one_is_no_id() -> None:
    # Commits a run made on such a broker carry the zero id; metadata of another tool behind our
    # prefix is not an id either: both go by offsets (past the end: read from the beginning).
    for metadata in (encoded(ZERO_ID), encoded("x"), encoded("raSL+FsLRNyFFdmWDsLFiA" * 100),
                     encoded("raSL+FsLRNyFFdmWDsLFi\u00e9")):
        assert decoded(metadata) is None, metadata
        assert decide(5, decoded(metadata), ZERO_ID, 3) is Start.RECREATED


def test_a_recreated_dlq_on_a_broker_without_ids_is_read_from_its_beginning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # What main did with such a broker: the group's position 5 committed with the zero id, the
    # DLQ purged and refilled with 3 records, the zero id again: resumed at 3, nothing replayed.
    from confluent_kafka import Uuid

    import consumer.sre.replay as replay
    import consumer.sre.topic_identity as topic_identity

    cluster = Cluster(dlq_records(3), committed={"g": 5}, committed_metadata={"g": encoded(ZERO_ID)})
    install(monkeypatch, cluster)
    monkeypatch.setattr(topic_identity, "make_admin", lambda settings: _admin_giving(Uuid(0, 0)))
    monkeypatch.setattr(replay, "topic_id_of",
                        lambda settings, topic, note=None: topic_identity.topic_id_of(settings, "dlq"))
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 3 and cluster.committed["g"] == 3
    assert "same topic" not in result.output and "recreated" in result.output
    assert decoded(cluster.committed_metadata["g"]) is None  # no zero id stored


def test_metadata_that_is_not_utf8_is_no_id_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: confluent_kafka reads a commit's metadata as UTF-8 when `metadata` is read
    # (a T_STRING member): bytes that are not, which a client on a broker that keeps the bytes as
    # sent can commit on the group, raised UnicodeDecodeError out of the replay at every run.
    from tests.unit.sre.fake_dlq import FakeDlqConsumer

    class NotUtf8:
        def __init__(self, offset: int) -> None:
            self.partition, self.offset = 0, offset

        @property
        def metadata(self) -> str:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    cluster = Cluster(dlq_records(3), committed={"g": 5}, topic_id=ID_1)
    install(monkeypatch, cluster)
    monkeypatch.setattr(FakeDlqConsumer, "committed",
                        lambda self, tps, timeout=0: [NotUtf8(self.cluster.committed[self.group]) for _ in tps])
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 3 and decoded(cluster.committed_metadata["g"]) == ID_1  # by offsets, as before


def test_a_position_past_the_end_of_a_topic_with_another_id_is_said_recreated_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The ids tell it was recreated: "(or truncated)" is for a commit that carries no id.
    cluster = Cluster(dlq_records(3), committed={"g": 5}, committed_metadata={"g": encoded(ID_OLD)},
                      topic_id=ID_NEW)
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    warning = " ".join(next(line for line in result.output.splitlines() if "warning" in line).split())
    assert "topic id differs" in warning and "or truncated" not in warning, warning
