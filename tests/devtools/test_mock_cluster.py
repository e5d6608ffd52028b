"""Finding the librdkafka that confluent-kafka's wheel bundles, on every platform's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from fraud_devtools.mock_cluster import MockCluster, bundled_librdkafka


@pytest.mark.parametrize(
    "layout",
    [
        "confluent_kafka.libs/librdkafka-d8a0c1e3.so.1",  # Linux (auditwheel)
        "confluent_kafka/.dylibs/librdkafka.1.dylib",  # macOS (delocate)
        "confluent_kafka.libs/librdkafka-5a1b2c3d.dll",  # Windows (delvewheel)
    ],
)
def test_the_bundled_library_is_found_in_each_wheel_layout(tmp_path: Path, layout: str) -> None:
    lib = tmp_path / layout
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    (tmp_path / "confluent_kafka").mkdir(exist_ok=True)
    assert bundled_librdkafka(tmp_path) == lib
    assert bundled_librdkafka(tmp_path / "elsewhere") is None


def test_this_machines_wheel_runs_a_mock_cluster() -> None:
    with MockCluster() as cluster:
        assert cluster.bootstrap_servers.startswith("127.0.0.1:")


def test_brokers_advertise_another_host_on_their_own_ports() -> None:
    from confluent_kafka import Consumer, Producer

    with MockCluster(brokers=2) as cluster:
        ports = [a.rsplit(":", 1)[1] for a in cluster.bootstrap_servers.split(",")]
        cluster.advertise("localhost")  # still 127.0.0.1, under a name the metadata must carry
        assert cluster.bootstrap_servers == ",".join(f"localhost:{p}" for p in ports)
        cluster.create_topic("t", 2)
        producer = Producer({"bootstrap.servers": cluster.bootstrap_servers})
        metadata = producer.list_topics(timeout=10)
        assert {(b.id, b.host, str(b.port)) for b in metadata.brokers.values()} == {
            (1, "localhost", ports[0]),
            (2, "localhost", ports[1]),
        }
        producer.produce("t", b"v", partition=1)
        assert producer.flush(10) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": cluster.bootstrap_servers,
                "group.id": "g",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(["t"])
        message = None
        for _ in range(50):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                break
        consumer.close()
        assert message is not None and message.value() == b"v"
