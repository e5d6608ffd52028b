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
from collections.abc import Sequence
from itertools import repeat
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fraud_runtime.settings import KafkaSettings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fraud_scorer.entity_features import SEP, EntityValues, JoinRow

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


class EntityRows:
    """One entity's rows: key -> a row of a float64 matrix (as_of, last_ts, values...).

    A scorer holds the whole table, a row per device or card of the business. As a dict of
    tuples of Python floats a row cost about 390 bytes (a million device rows: +375 MiB of peak
    RSS in `make bench`); here the numbers cost 8 bytes each, and the key and its slot the
    rest. Written by the reader thread only; a concurrent read sees the old row or the new one
    (the matrix is replaced whole when it grows, after the copy)."""

    def __init__(self) -> None:
        self.slots: dict[str, int] = {}
        self.matrix: npt.NDArray[np.float64] | None = None
        self._free: list[int] = []
        self._used = 0

    def __len__(self) -> int:
        return len(self.slots)

    def get(self, key: str) -> JoinRow | None:
        slot = self.slots.get(key)
        if slot is None or self.matrix is None:
            return None
        return tuple(self.matrix[slot].tolist())

    def gather(self, keys: Sequence[str | None], width: int) -> npt.NDArray[np.float64]:
        """The rows of ``keys`` (``width`` columns each), a row of NaN where a key has none:
        one dict read per key and one fancy index, for a whole batch."""
        slots = np.fromiter(map(self.slots.get, keys, repeat(-1)), np.intp, len(keys))  # type: ignore[arg-type]
        matrix = self.matrix  # read after the slots: it only grows before a slot is added
        out = np.full((len(keys), width), np.nan)
        if matrix is None or matrix.shape[1] != width:
            return out
        found = (slots >= 0) & (slots < len(matrix))
        out[found] = matrix[slots[found]]
        return out

    def put(self, key: str, row: JoinRow) -> None:
        matrix = self.matrix
        if matrix is None or matrix.shape[1] != len(row):  # the first row, or a new set
            matrix = self.matrix = np.zeros((1024, len(row)))
            self.slots, self._free, self._used = {}, [], 0
        slot = self.slots.get(key)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot, self._used = self._used, self._used + 1
                if slot >= len(matrix):
                    grown = np.zeros((2 * len(matrix), matrix.shape[1]))
                    grown[: len(matrix)] = matrix
                    matrix = self.matrix = grown
            matrix[slot] = row
            self.slots[key] = slot
        else:
            matrix[slot] = row

    def drop(self, key: str) -> None:
        slot = self.slots.pop(key, None)
        if slot is not None:
            self._free.append(slot)


class EntityTable:
    """``rows_of(entity).get(key)``: the newest row the stage published for the key, or None."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, metrics: TableMetrics, set_version: str
    ) -> None:
        self.kafka, self.topic, self.metrics = kafka, topic, metrics
        # Rows of another feature set (a stage not yet restarted after a change) are ignored:
        # their values mean something else.
        self.set_version = set_version
        self.rows: dict[str, EntityRows] = {}
        self.loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="entity-table", daemon=True)
        self.error: str | None = None

    def rows_of(self, entity: str) -> EntityRows:
        rows = self.rows.get(entity)
        if rows is None:
            rows = self.rows[entity] = EntityRows()
        return rows

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
                # librdkafka's default (500 ms) held each fetch that long on the mock broker:
                # freshness p50 320 ms -> 97 ms at 5,000 tx/s (bench/entity_stage_bench.py).
                "fetch.wait.max.ms": 10,
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
        rows = self.rows_of(entity)
        value = msg.value()
        if value is None:  # a tombstone: the stage forgot the key
            rows.drop(key)
            return
        try:
            row = decode(value)
        except msgspec.DecodeError:
            self.metrics.invalid.inc()
            return
        if row.set_version != self.set_version:
            rows.drop(key)
            return
        rows.put(key, row.joined())
        for name, raw in msg.headers() or []:
            if name == _SOURCE and self.loaded.is_set():
                source = float(raw or 0) / 1000.0
                if source > 0:
                    self.metrics.freshness.observe(max(time.time() - source, 0.0))
