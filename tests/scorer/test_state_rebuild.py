"""State rebuild on its own, against a real Kafka protocol server: what a newly assigned
partition replays is bounded by its committed offset, the history horizon (by record
timestamp) and ``max_messages``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from fraud_devtools.mock_cluster import MockCluster
from fraud_runtime.settings import KafkaSettings
from fraud_scorer.pipeline import Record
from fraud_scorer.state_rebuild import StateRebuilder, replay_start

pytestmark = pytest.mark.integration
T0_MS = 1_800_000_000_000
HOUR_MS = 3_600_000


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mc:
        mc.create_topic("tx", 2)
        yield mc


def fill(bootstrap: str, timestamps_ms: list[int]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i, ts in enumerate(timestamps_ms):
        p.produce("tx", f"m{i}".encode(), b"k", partition=0, timestamp=ts)
    assert p.flush(10) == 0


def commit(bootstrap: str, group: str, offset: int) -> Consumer:
    """A member of ``group`` whose committed offset on partition 0 is ``offset``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("tx", 0, offset)], asynchronous=False)
    return c


def rebuild(
    bootstrap: str, consumer: Consumer, *, hours: float = 24.0, most: int = 1000
) -> tuple[dict[int, int], list[bytes]]:
    seen: list[bytes] = []
    beats: list[int] = []

    def replay(records: list[Record]) -> int:
        seen.extend(r.value() or b"" for r in records)
        return len(records)

    rebuilder = StateRebuilder(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id="g"),
        history_hours=hours,
        max_messages=most,
        replay=replay,
        alive=lambda: beats.append(len(seen)),
    )
    # Where each partition resumes, as the runtime hands them to on_assigned.
    partitions = consumer.committed([TopicPartition("tx", 0), TopicPartition("tx", 1)], timeout=10)
    counts = rebuilder.rebuild(consumer, partitions)
    # Liveness hears from the rebuild after every replayed batch, the last one included.
    assert beats and (not seen or beats[-1] == len(seen))
    return counts, seen


def test_replays_up_to_the_committed_offset_only(cluster: MockCluster) -> None:
    bootstrap = cluster.bootstrap_servers
    fill(bootstrap, [T0_MS + i for i in range(30)])
    consumer = commit(bootstrap, "g", 20)
    try:
        counts, seen = rebuild(bootstrap, consumer)
    finally:
        consumer.close()
    # Partition 1 has no committed offset: a new partition, nothing to rebuild.
    assert counts == {0: 20}
    assert seen == [f"m{i}".encode() for i in range(20)]


def test_replay_is_bounded_by_max_messages(cluster: MockCluster) -> None:
    bootstrap = cluster.bootstrap_servers
    fill(bootstrap, [T0_MS + i for i in range(30)])
    consumer = commit(bootstrap, "g", 30)
    try:
        counts, seen = rebuild(bootstrap, consumer, most=8)
    finally:
        consumer.close()
    assert counts == {0: 8}
    assert seen == [f"m{i}".encode() for i in range(22, 30)]


def test_a_broker_that_cannot_search_by_time_gets_a_count_bounded_replay(
    cluster: MockCluster,
) -> None:
    """librdkafka's mock cluster answers -1 to every offsets-for-times query: the replay then
    falls back to ``max_messages`` (a real broker trims to the horizon; see replay_start)."""
    bootstrap = cluster.bootstrap_servers
    fill(bootstrap, [T0_MS + i for i in range(10)] + [T0_MS + 3 * HOUR_MS + i for i in range(10)])
    consumer = commit(bootstrap, "g", 20)
    try:
        counts, seen = rebuild(bootstrap, consumer, hours=1.0, most=15)
    finally:
        consumer.close()
    assert counts == {0: 15}
    assert seen == [f"m{i}".encode() for i in range(5, 20)]


@pytest.mark.parametrize(
    ("low", "end", "most", "horizon", "start"),
    [
        (0, 100, 1000, -1, 0),  # horizon unknown, whole log
        (0, 100, 30, -1, 70),  # count-bounded
        (0, 100, 1000, 60, 60),  # the horizon is later than the count bound
        (0, 100, 30, 60, 70),  # the count bound is later than the horizon
        (50, 100, 1000, 10, 50),  # a horizon before the log's start (retention) is unknown
        (0, 100, 1000, 100, 0),  # ... and so is one at or past the end
    ],
)
def test_replay_start(low: int, end: int, most: int, horizon: int, start: int) -> None:
    assert replay_start(low, end, most, horizon) == start
