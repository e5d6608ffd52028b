"""The runtime's loop on librdkafka's mock cluster: a batch whose destination is down is
rewound and polled again, as long as it takes, and committed once it goes through."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from confluent_kafka import Message, Producer
from fraud_devtools.local import wait_until
from fraud_devtools.mock_cluster import MockCluster
from fraud_runtime.process import KafkaProcess, LoopSettings, RetryBatch
from fraud_runtime.settings import KafkaSettings, MetricsSettings
from prometheus_client import CollectorRegistry


class Flaky(KafkaProcess):
    """Refuses every batch until ``up`` is set (a destination away), then takes them."""

    commit_each_batch = True

    def __init__(self, bootstrap: str) -> None:
        super().__init__(
            kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id="g", client_id="t"),
            metrics=MetricsSettings(host="127.0.0.1", port=0),
            registry=CollectorRegistry(),
            topics=["in"],
            loop=LoopSettings(max_messages=50, poll_timeout_s=0.05),
        )
        self.up = threading.Event()
        self.refused = 0
        self.taken: Counter[int] = Counter()

    def handle(self, records: list[Message]) -> None:
        if not self.up.is_set():
            self.refused += 1
            raise RetryBatch(0.05)
        self.taken.update(m.offset() or 0 for m in records)


def test_a_refused_batch_is_polled_again_until_it_goes_through() -> None:
    with MockCluster() as cluster:
        cluster.create_topic("in", 1)
        producer = Producer({"bootstrap.servers": cluster.bootstrap_servers})
        for i in range(120):
            producer.produce("in", str(i).encode())
        assert producer.flush(10) == 0
        process = Flaky(cluster.bootstrap_servers)
        thread = threading.Thread(target=process.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: process.refused >= 20, 30, "retries")
            assert not process.taken  # nothing skipped while the destination is away
            assert thread.is_alive()
            process.up.set()
            wait_until(lambda: len(process.taken) == 120, 30, "every record taken")
        finally:
            process.stop()
            thread.join(30)
        assert set(process.taken) == set(range(120))
        assert all(n == 1 for n in process.taken.values())  # each once after the outage


def test_a_bad_log_level_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    for command in ("fraud-scorer", "fraud-sink"):
        done = subprocess.run(
            [bin_dir / command, "--log-level", "loud", "--config", str(tmp_path / "x.yaml")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "invalid choice: 'loud'" in done.stderr and "Traceback" not in done.stderr
    # Every component has its command, the operator too.
    done = subprocess.run(
        [bin_dir / "fraud-operator", "--help"], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "--allowed-image" in done.stdout
