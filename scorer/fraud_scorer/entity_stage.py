"""The entity stage: features per merchant, device, IP or any attribute, and from analysts'
labels, computed where each entity's events meet (docs/features.md, "The entity stage").

One process type, one consumer group, scaled by partitions, on the shared Kafka runtime:

1. **Route.** Transactions from the input topic (keyed by user) and verdicts from the labels
   topic are re-published to the ``by_entity`` topic, once per entity the feature set
   aggregates, keyed by ``<entity>=<value>``: every event of one merchant lands in one
   partition of that topic, whichever user made it. A transaction travels as what the entity's
   features read of it (``[id, time, values...]``, about 60 bytes instead of the whole
   message: a third of the broker traffic, and no second decode of the transaction).
2. **Aggregate.** Records of the ``by_entity`` topic are folded into the partition's
   :class:`~fraud_scorer.entity_features.EntityAggregator`, and the new values of every key a
   batch touched are published to the compacted ``entity_features`` table, which every scorer
   reads whole and joins (:class:`~fraud_scorer.entity_table.EntityTable`).

Both steps are at-least-once like every process here: offsets are stored once the outputs are
acknowledged, and a redelivered event changes nothing (the aggregator deduplicates by
transaction id). After a restart or rebalance, a ``by_entity`` partition's state is rebuilt by
replaying its records inside the set's horizon (``StateRebuilder``), and the aggregator's values
do not depend on arrival order, so the table is what an uninterrupted stage would publish.

A message that cannot be used (not a transaction, a verdict without its transaction) is counted
and skipped: the scorer dead-letters bad transactions already, and one bad message must not stop
the stage.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, Message, TopicPartition
from fraud_runtime.process import KafkaProcess, LoopSettings, run_main
from fraud_runtime.settings import (
    EnvFirstSettings,
    Frozen,
    KafkaSettings,
    MetricsSettings,
    load_settings_file,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field

from fraud_scorer.config import BatchSettings, StateSettings
from fraud_scorer.contract import Transaction, TransactionDecoder
from fraud_scorer.entity_features import (
    SEP,
    EntityAggregator,
    StagePlan,
    entity_value,
    table_key,
)
from fraud_scorer.feature_defs import FeatureSetDef
from fraud_scorer.state_rebuild import StateRebuilder

_KIND, _ENTITY, _SOURCE = "fe.kind", "fe.entity", "fe.source_ms"
_EXPIRY_EVERY_S = 60.0


class StageTopics(Frozen):
    input: str = "transactions"
    labels: str | None = None  # analysts' verdicts (fraud-cases label --kafka, the console)
    by_entity: str = "transactions-by-entity"
    entity_features: str = "entity-features"


class EntityStageSettings(EnvFirstSettings):
    detector: str = "default"
    kafka: KafkaSettings = KafkaSettings(group_id="fraud-entity-stage")
    topics: StageTopics = StageTopics()
    features: FeatureSetDef
    state: StateSettings = StateSettings()
    batch: BatchSettings = BatchSettings()
    metrics: MetricsSettings = MetricsSettings()
    # An event dated further ahead of this process's clock is skipped: a key's windows are
    # anchored at its newest event, so one transaction dated 9999 would blind a merchant's
    # features for good (every later event would look too old).
    max_clock_skew_s: float = Field(default=3600.0, gt=0)


class LabelMessage(msgspec.Struct, forbid_unknown_fields=False):
    """A verdict on the labels topic. The stage needs the labelled transaction (its time and
    its entities), which the case store and the console send along."""

    transaction_id: str
    is_fraud: bool
    at: datetime | None = None
    transaction: Transaction | None = None


class _Routed(msgspec.Struct, array_like=True):
    """A verdict as routed to its entity's partition: the transaction and when it was known."""

    is_fraud: bool
    at: float
    transaction: Transaction


class StageMetrics:
    def __init__(self, detector: str) -> None:
        self.registry = r = CollectorRegistry()
        self.detector = detector
        self.ready = Gauge("fraud_entity_stage_ready", "1 when ready", ["detector"], registry=r)
        self.routed = Counter(
            "fraud_entity_stage_routed",
            "events re-published to the by-entity topic, per kind",
            ["detector", "kind"],
            registry=r,
        )
        self.folded = Counter(
            "fraud_entity_stage_folded",
            "by-entity records folded into the aggregates, per kind",
            ["detector", "kind"],
            registry=r,
        )
        self.skipped = Counter(
            "fraud_entity_stage_skipped",
            "messages the stage could not use, per reason",
            ["detector", "reason"],
            registry=r,
        )
        self.published = Counter(
            "fraud_entity_stage_published", "table rows published", ["detector"], registry=r
        )
        self.keys = Gauge(
            "fraud_entity_stage_keys", "entity keys in state", ["detector"], registry=r
        )
        self.delay = Histogram(
            "fraud_entity_stage_publish_delay_seconds",
            "from a transaction's arrival on the input topic to its effect on the table",
            ["detector"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.replayed = Counter(
            "fraud_entity_stage_replayed", "records replayed to rebuild state", ["detector"],
            registry=r,
        )  # fmt: skip
        self.ready = self.ready.labels(detector)  # type: ignore[assignment]


class EntityStage(KafkaProcess):
    """The stage's process; see the module's docstring."""

    log_name = "fraud_entity_stage"

    def __init__(self, settings: EntityStageSettings) -> None:
        self.settings = s = settings
        self.metrics = StageMetrics(s.detector)
        t = s.topics
        super().__init__(
            kafka=s.kafka,
            metrics=s.metrics,
            registry=self.metrics.registry,
            topics=[t.input, t.by_entity, *([t.labels] if t.labels else [])],
            loop=LoopSettings(
                s.batch.max_messages, s.batch.poll_timeout_s, s.batch.commit_interval_s
            ),
            ready_gauge=self.metrics.ready,
        )
        self.plan = StagePlan.of(s.features)
        if not self.plan.slots:
            raise ValueError("features: the set has no feature for the entity stage")
        self.decoder = TransactionDecoder(s.batch.max_message_bytes)
        self._encode = msgspec.json.Encoder().encode
        self._decode_event = msgspec.json.Decoder(list[Any]).decode
        self.aggregates: dict[int, EntityAggregator] = {}
        self.rebuilder = StateRebuilder(
            kafka=s.kafka,
            history_hours=self.plan.horizon_s / 3600.0,
            max_messages=s.state.replay_max_messages,
            replay=self._replay,
            alive=self.beat,
        )
        self._rebuilding = False
        self._next_expiry = time.monotonic() + _EXPIRY_EVERY_S
        self._watermark = 0.0

    # -- the runtime's hooks -----------------------------------------------------------------

    def starting(self) -> None:
        self.log.info(
            "entity stage starting",
            detector=self.settings.detector,
            feature_set=self.plan.version,
            entities=sorted(self.plan.slots),
            horizon_hours=self.plan.horizon_s / 3600.0,
            topics=self.settings.topics.model_dump(),
        )

    def busy(self) -> str | None:
        return "rebuilding entity state" if self._rebuilding else None

    def tick(self) -> None:
        now = time.monotonic()
        if now > self._next_expiry:
            self._next_expiry = now + _EXPIRY_EVERY_S
            topic = self.settings.topics.entity_features
            for aggregator in self.aggregates.values():
                for entity, key in aggregator.expire_idle(self._watermark):
                    # A tombstone: compaction drops the row, and scorers forget the key.
                    self.produce(topic, table_key(entity, key).encode(), None)
            self.metrics.keys.labels(self.settings.detector).set(self._key_count())

    def handle(self, records: list[Message]) -> None:
        t = self.settings.topics
        touched: dict[tuple[int, str, str], float] = {}
        for msg in records:
            topic = msg.topic()
            if topic == t.by_entity:
                self._fold(msg, touched)
            elif topic == t.input:
                self._route_transaction(msg)
            else:
                self._route_label(msg)
        self._publish(touched)

    def on_assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [p for p in partitions if p.topic == self.settings.topics.by_entity]
        for p in mine:
            self.aggregates.setdefault(p.partition, EntityAggregator(self.plan))
        if not mine or not self.settings.state.replay:
            return
        self._rebuilding = True
        try:
            replayed = self.rebuilder.rebuild(consumer, mine)
            self.metrics.replayed.labels(self.settings.detector).inc(sum(replayed.values()))
        finally:
            self._rebuilding = False

    def on_released(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            if p.topic == self.settings.topics.by_entity:
                self.aggregates.pop(p.partition, None)

    def on_stats(self) -> None:
        self.metrics.keys.labels(self.settings.detector).set(self._key_count())

    def consumer_overrides(self) -> dict[str, Any]:
        # "range" splits *each* topic's partitions over the members, so the aggregation (the
        # by-entity topic) is spread whatever the other topics hold; cooperative-sticky balances
        # the total count and gave one member every by-entity partition. Range is eager: a
        # rebalance revokes everything, and each member rebuilds its by-entity partitions.
        return {"fetch.wait.max.ms": 10, "partition.assignment.strategy": "range"}

    def producer_overrides(self) -> dict[str, Any]:
        return {"queue.buffering.max.messages": 500_000, "linger.ms": 5}

    # -- routing -----------------------------------------------------------------------------

    def _route_transaction(self, msg: Message) -> None:
        tx = self.decoder.decode(msg.value())
        if not isinstance(tx, Transaction):
            self._skip(f"transaction_{tx.reason}")
            return
        ts, encode = tx.timestamp.timestamp(), self._encode
        if ts > time.time() + self.settings.max_clock_skew_s:
            self._skip("transaction_in_future")
            return
        self._route(
            tx,
            b"tx",
            lambda entity: encode((tx.transaction_id, ts, *self.plan.fields_of(entity, tx))),
            msg,
        )

    def _route_label(self, msg: Message) -> None:
        try:
            label = msgspec.json.decode(msg.value() or b"", type=LabelMessage)
        except msgspec.DecodeError:
            self._skip("label_invalid")
            return
        if label.transaction is None:
            self._skip("label_without_transaction")
            return
        now = time.time()
        at = label.at.timestamp() if label.at is not None else now
        limit = now + self.settings.max_clock_skew_s
        if at > limit or label.transaction.timestamp.timestamp() > limit:
            self._skip("label_in_future")
            return
        body = msgspec.json.encode(_Routed(label.is_fraud, at, label.transaction))
        self._route(label.transaction, b"label", lambda _entity: body, msg)

    def _route(
        self, tx: Transaction, kind: bytes, body: Callable[[str], bytes], msg: Message
    ) -> None:
        _, source_ms = msg.timestamp()
        source = str(source_ms).encode()
        for entity in self.plan.slots:
            key = entity_value(tx, entity)
            if key is None:
                continue
            headers = [(_KIND, kind), (_ENTITY, entity.encode()), (_SOURCE, source)]
            self.produce(self.settings.topics.by_entity, table_key(entity, key).encode(),
                         body(entity), headers)  # fmt: skip
            self.metrics.routed.labels(self.settings.detector, kind.decode()).inc()

    def _skip(self, reason: str) -> None:
        self.metrics.skipped.labels(self.settings.detector, reason).inc()

    # -- aggregating -------------------------------------------------------------------------

    def _fold(self, msg: Message, touched: dict[tuple[int, str, str], float] | None) -> bool:
        headers: dict[str, bytes] = dict(msg.headers() or [])  # type: ignore[arg-type]
        kind, entity = headers.get(_KIND), (headers.get(_ENTITY) or b"").decode()
        aggregator = self.aggregates.get(msg.partition() or 0)
        if aggregator is None or entity not in self.plan.slots:
            self._skip("by_entity_unknown_entity")
            return False
        if kind == b"tx":
            key = (msg.key() or b"").decode().partition(SEP)[2]
            try:
                tx_id, ts, *values = self._decode_event(msg.value() or b"")
                if not isinstance(tx_id, str) or not isinstance(ts, int | float):
                    raise TypeError(tx_id)
            except (msgspec.DecodeError, ValueError, TypeError):
                self._skip("by_entity_invalid")
                return False
            changed = (
                [(entity, key)] if aggregator.add(entity, key, tx_id, ts, tuple(values)) else []
            )
        elif kind == b"label":
            try:
                routed = msgspec.json.decode(msg.value() or b"", type=_Routed)
            except msgspec.DecodeError:
                self._skip("by_entity_invalid")
                return False
            tx, ts = routed.transaction, routed.at
            changed = aggregator.add_label(
                tx, tx.timestamp.timestamp(), routed.is_fraud, ts, only=entity
            )
        else:
            self._skip("by_entity_invalid")
            return False
        self._watermark = max(self._watermark, ts)
        if touched is not None:
            self.metrics.folded.labels(self.settings.detector, kind.decode()).inc()
            source = float(headers.get(_SOURCE) or 0) / 1000.0
            for e, key in changed:
                slot = (msg.partition() or 0, e, key)
                touched[slot] = max(touched.get(slot, 0.0), source)
        return True

    def _publish(self, touched: dict[tuple[int, str, str], float]) -> None:
        topic, encode = self.settings.topics.entity_features, msgspec.json.encode
        now = time.time()
        delay = self.metrics.delay.labels(self.settings.detector)
        published = 0
        for (partition, entity, key), source in touched.items():
            values = self.aggregates[partition].values(entity, key)
            if values is None:
                continue
            published += 1
            headers = [(_SOURCE, str(int(source * 1000)).encode())]
            self.produce(topic, table_key(entity, key).encode(), encode(values), headers)
            if source > 0:
                delay.observe(max(now - source, 0.0))
        self.metrics.published.labels(self.settings.detector).inc(published)

    def _replay(self, records: list[Any]) -> int:
        return sum(1 for msg in records if self._fold(msg, None))

    def _key_count(self) -> int:
        return sum(a.key_count() for a in self.aggregates.values())


def load_settings(path: Path | None) -> EntityStageSettings:
    return load_settings_file(EntityStageSettings, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m fraud_scorer.entity_stage --config stage.yaml``."""
    return run_main(
        argv,
        prog="fraud-entity-stage",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        log_name="fraud_entity_stage",
        build=lambda config: EntityStage(load_settings(config)),
    )


if __name__ == "__main__":
    sys.exit(main())
