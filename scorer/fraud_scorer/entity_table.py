"""The scorer's copy of the entity stage's table (:mod:`fraud_scorer.entity_stage`).

Every scorer reads the whole compacted ``entity_features`` topic, from its beginning, into a
dict on a thread of its own: a lookup at scoring time is a dict read, and a slow or absent
table never holds up the scoring loop or its heartbeat. Until the table has been read up to the
end it had when the scorer started, the scorer is not ready (it would score with empty entity
features).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

import msgspec
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fraud_runtime.settings import KafkaSettings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fraud_scorer.entity_features import SEP, EntityValues

log = structlog.get_logger("fraud_scorer")
_SOURCE: Final = "fe.source_ms"
_METADATA_TIMEOUT_S: Final = 10.0


class TableMetrics:
    def __init__(self, registry: CollectorRegistry, detector: str, track: str) -> None:
        labels = {"detector": detector, "track": track}
        self.rows = Gauge(
            "fraud_entity_table_rows", "entity keys in the scorer's table", list(labels),
            registry=registry,
        ).labels(**labels)  # fmt: skip
        self.freshness = Histogram(
            "fraud_entity_table_freshness_seconds",
            "from a transaction's arrival on the input topic to its effect on this table",
            list(labels),
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=registry,
        ).labels(**labels)
        self.invalid = Counter(
            "fraud_entity_table_invalid", "table rows that could not be read", list(labels),
            registry=registry,
        ).labels(**labels)  # fmt: skip


class EntityTable:
    """``getter(entity)(key)``: the newest row the stage published for the key, or None."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, metrics: TableMetrics, set_version: str
    ) -> None:
        self.kafka, self.topic, self.metrics = kafka, topic, metrics
        # Rows of another feature set (a stage not yet restarted after a change) are ignored:
        # their values mean something else.
        self.set_version = set_version
        # Per entity, key -> row: a join is one dict read (the reader thread replaces rows
        # whole, so a reader sees the old row or the new one).
        self.rows: dict[str, dict[str, EntityValues]] = {}
        self.loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="entity-table", daemon=True)
        self.error: str | None = None

    def getter(self, entity: str) -> Callable[[str], EntityValues | None]:
        return self.rows.setdefault(entity, {}).get

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def start(self) -> EntityTable:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:
                self.error = str(exc)
                log.error("entity table reader failed; restarting it", error=str(exc))
                self._stop.wait(2.0)

    def _follow(self) -> None:
        consumer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"{self.kafka.group_id}.entity-table",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            ends = self._assign(consumer)
            decode = msgspec.json.Decoder(EntityValues).decode
            while not self._stop.is_set():
                for msg in consumer.consume(5000, 0.2):
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("entity table consumer error", error=str(error))
                        continue
                    self._apply(msg, decode)
                    part = msg.partition()
                    if part in ends and (msg.offset() or 0) + 1 >= ends[part]:
                        del ends[part]
                if not ends and not self.loaded.is_set():
                    self.loaded.set()
                    log.info("entity table loaded", rows=len(self))
                self.metrics.rows.set(len(self))
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> dict[int, int]:
        """Assign every partition from its start; returns the end offsets to catch up to."""
        deadline = time.monotonic() + 120.0
        while True:
            meta = consumer.list_topics(self.topic, timeout=_METADATA_TIMEOUT_S)
            topic = meta.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                break
            if time.monotonic() > deadline or self._stop.is_set():
                raise RuntimeError(f"topic {self.topic!r} not found")
            self._stop.wait(1.0)
        ends: dict[int, int] = {}
        for p in topic.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=_METADATA_TIMEOUT_S
            )
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in topic.partitions])
        return ends

    def _apply(self, msg, decode) -> None:  # type: ignore[no-untyped-def]
        entity, _, key = (msg.key() or b"").decode(errors="replace").partition(SEP)
        rows = self.rows.setdefault(entity, {})
        value = msg.value()
        if value is None:  # a tombstone: the stage forgot the key
            rows.pop(key, None)
            return
        try:
            row = decode(value)
        except msgspec.DecodeError:
            self.metrics.invalid.inc()
            return
        if row.set_version != self.set_version:
            rows.pop(key, None)
            return
        rows[key] = row
        for name, raw in msg.headers() or []:
            if name == _SOURCE and self.loaded.is_set():
                source = float(raw or 0) / 1000.0
                if source > 0:
                    self.metrics.freshness.observe(max(time.time() - source, 0.0))
