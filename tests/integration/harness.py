"""Drive real scorer processes against a real Kafka protocol server (librdkafka's mock)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from fraud_devtools.local import free_port, wait_until
from fraud_devtools.producer import send_paced
from fraud_scorer.contract import Transaction, TransactionDecoder
from fraud_scorer.features import FeatureEngine, as_mapping
from fraud_training.data import to_payloads

TOPICS = {"input": "tx", "decisions": "decisions", "alerts": "alerts", "dead_letter": "dlq"}


def stream(frame: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    """(key, value) wire messages of a transaction frame, keyed by user."""
    keys = [u.encode() for u in frame["user_id"]]
    return list(zip(keys, to_payloads(frame), strict=True))


def reference_features(items: list[tuple[bytes, bytes]]) -> dict[str, dict[str, float]]:
    """Features an uninterrupted scorer computes: one engine over the stream in order."""
    decoder, engine = TransactionDecoder(1 << 16), FeatureEngine()
    out = {}
    for _, raw in items:
        tx = decoder.decode(raw)
        assert isinstance(tx, Transaction)
        out[tx.transaction_id] = as_mapping(engine.compute(0, tx, tx.timestamp.timestamp()))
    return out


def produce(
    bootstrap: str,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 2,
            "queue.buffering.max.messages": 1_000_000,
            "message.max.bytes": 2_000_000,  # near-limit messages, as a broker may accept them
        }
    )
    n = 0
    for key, value in items:
        p.produce(topic, value, key, headers=headers)
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return n


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int


def read_topic(bootstrap: str, topic: str, partitions: int = 4) -> list[Record]:
    """Everything currently in ``topic``, read to each partition's high watermark."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in range(partitions)
        }
        todo = {p for p, (lo, hi) in ends.items() if hi > lo}
        c.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        out: list[Record] = []
        deadline = time.monotonic() + 60
        while todo and time.monotonic() < deadline:
            for m in c.consume(5000, 0.2):
                if m.error():
                    continue
                out.append(
                    Record(m.key(), m.value(), dict(m.headers() or []), m.partition(), m.offset())
                )
                if m.offset() + 1 >= ends[m.partition()][1]:
                    todo.discard(m.partition())
        return out
    finally:
        c.close()


def topic_size(bootstrap: str, topic: str, partitions: int = 4) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-size"})
    try:
        return sum(
            hi - lo
            for lo, hi in (
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in range(partitions)
            )
        )
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return {
            tp.partition: tp.offset
            for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        }
    finally:
        c.close()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples matching ``labels`` in a Prometheus text exposition; 0
    when the family is exported but no such sample exists yet, NaN when it is not exported."""
    families = {name} | {
        name.removesuffix(suffix) for suffix in ("_total", "_count", "_sum", "_bucket")
    }
    if not any(
        line.startswith("# TYPE ") and line.split(" ")[2] in families for line in text.splitlines()
    ):
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith(name)
            and line[len(name)] in "{ "
            and all(f'{k}="{v}"' in line for k, v in labels.items())
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


RUNNING: list[subprocess.Popen[bytes]] = []


def kill_leftovers() -> None:
    """Stop every scorer a test started and did not stop (e.g. because it failed)."""
    while RUNNING:
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


class ScorerProcess:
    """A real ``python -m fraud_scorer`` process with its own config file and log."""

    module = "fraud_scorer"
    env: dict[str, str] | None = None

    def __init__(
        self,
        workdir: Path,
        bootstrap: str,
        model_dir: Path,
        *,
        name: str = "scorer",
        group: str = "fraud-scorer",
        rules: list[dict[str, str]] | None = None,
        **overrides: Any,
    ) -> None:
        self.port = free_port()
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.config: dict[str, Any] = {
            "detector": "it",
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": group,
                "extra": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            },
            "topics": TOPICS,
            "model": {"path": str(model_dir)},
            "rules": rules
            if rules is not None
            else [
                {
                    "name": "risky-merchant",
                    "expression": "tx.merchant in ['XYZ_Merchant', 'UnknownShop']",
                },
            ],
            "decision": {"review_at": 0.9, "block_at": 0.99},
            "metrics": {"host": "127.0.0.1", "port": self.port},
            "reload_interval_s": 0.2,
            **overrides,
        }
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--config", str(self.config_path)]

    def start(self, wait_ready: bool = True) -> ScorerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else {**os.environ, **self.env},
            )
        RUNNING.append(self.proc)
        if wait_ready:
            wait_until(self.ready, 60, f"{self.config_path.stem} /readyz ({self.log()[-2000:]})")
        return self

    def get(self, path: str) -> tuple[int, str]:
        """GET on the process's health/metrics port; (0, "") when nothing answers. A running
        process that is merely slow (a loaded CI machine) is given three tries."""
        for _ in range(3):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError:
                if self.proc is None or self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        return 0, ""

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.module} exited with {self.proc.returncode}: {self.log()[-3000:]}"
            )
        return self.get("/readyz")[0] == 200

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples matching ``labels``; 0 when the family is exported but
        no such sample exists yet. NaN when there is no data at all (no answer from
        ``/metrics``, or no such family): every comparison with NaN is false, so no data can
        pass an assertion (it read as 0 before, and ``lag == 0`` passed on nothing), while a
        polling ``wait_until`` just keeps waiting."""
        status, text = self.get("/metrics")
        return metric_sum(text, name, **labels) if status == 200 else float("nan")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


class SinkProcess(ScorerProcess):
    """A real ``python -m fraud_sinks`` process. Secrets (webhook URL, DSN) go in ``env``,
    as the operator passes them from Secrets."""

    module = "fraud_sinks"

    def __init__(
        self,
        workdir: Path,
        bootstrap: str,
        sink: str,
        *,
        env: dict[str, str],
        labels_topic: str | None = None,
        **overrides: Any,
    ) -> None:
        self.port = free_port()
        self.config_path = workdir / f"sink-{sink}.yaml"
        self.log_path = workdir / f"sink-{sink}.log"
        self.env = env
        self.config = {
            "detector": "it",
            "sink": sink,
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"it-sink-{sink}",
                "extra": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            },
            "topics": {
                "decisions": TOPICS["decisions"],
                "alerts": TOPICS["alerts"],
                "labels": labels_topic,
                "dead_letter": TOPICS["dead_letter"],
            },
            "metrics": {"host": "127.0.0.1", "port": self.port},
            "batch": {"poll_timeout_s": 0.05},
            **overrides,
        }
        self.write_config()
        self.proc = None


@contextmanager
def steady_traffic(
    bootstrap: str, topic: str, items: list[tuple[bytes, bytes]], per_tick: int = 150
) -> Iterator[None]:
    """Produce ``items`` (key, value) round and round, ``per_tick`` every 0.1 s (~1,500/s),
    from a background thread, until the block ends."""
    stop = threading.Event()

    def run() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        forever = itertools.takewhile(lambda _: not stop.is_set(), itertools.cycle(items))
        send_paced(producer, topic, forever, rate=per_tick * 10, every=per_tick)
        producer.flush(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(20)
