"""The development kit's producer: ``fraud-produce`` streams synthetic traffic into Kafka."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition
from fraud_devtools.mock_cluster import MockCluster
from fraud_devtools.produce import app
from typer.testing import CliRunner

runner = CliRunner()


def test_produce_streams_to_kafka() -> None:
    with MockCluster() as cluster:
        cluster.create_topic("tx", 2)
        args = ["--bootstrap", cluster.bootstrap_servers, "--topic", "tx"]
        result = runner.invoke(
            app, [*args, "--users", "300", "--days", "1", "--rate", "5000", "--limit", "1200"]
        )
        assert result.exit_code == 0, result.output
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": "t"})
        sizes = [
            consumer.get_watermark_offsets(TopicPartition("tx", p), timeout=10) for p in (0, 1)
        ]
        consumer.close()
        assert sum(hi - lo for lo, hi in sizes) == 1200
