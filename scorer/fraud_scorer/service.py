"""The scorer process: the thin Kafka layer around :class:`~fraud_scorer.pipeline.BatchScorer`.

At-least-once by construction: offsets are stored (``enable.auto.offset.store=false``) only
once every decision, alert and dead letter produced for them has been acknowledged by the
broker; librdkafka then commits stored offsets in the background and once more on shutdown.
A delivery failure is fatal: the process exits without storing, and its successor re-scores
from the last committed offset (decisions are keyed by transaction id, so duplicates are
recognisable downstream).

Feature state follows partition ownership: on assignment the state of each new partition is
rebuilt by replaying its recent messages (see :mod:`fraud_scorer.features`); on revocation the
partition's users are dropped.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import structlog
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from fraud_scorer.config import ScorerSettings, read_reloadable
from fraud_scorer.features import FEATURE_SET_VERSION, FeatureEngine
from fraud_scorer.metrics import HealthServer, ScorerMetrics
from fraud_scorer.model import Model, load_model
from fraud_scorer.pipeline import BatchResult, BatchScorer, Record
from fraud_scorer.redact import mask_event
from fraud_scorer.rules import RuleCompileError, compile_rules

log = structlog.get_logger("fraud_scorer")


class FatalError(RuntimeError):
    """The scorer cannot continue safely; it exits without storing offsets."""


@dataclass
class _FileStamp:
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _FileStamp | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


class ScorerService:
    """One scorer process. ``run()`` blocks until :meth:`stop` (or SIGTERM) and returns."""

    def __init__(
        self,
        settings: ScorerSettings,
        *,
        config_path: Path | None = None,
        model: Model | None = None,
    ) -> None:
        self.settings = s = settings
        self.config_path = config_path
        self.metrics = ScorerMetrics(s.detector, s.track)
        self.model = model or load_model(s.model.path)
        ruleset = compile_rules(s.rules, s.decision)
        self.engine = FeatureEngine(s.features.history_hours, s.features.max_events_per_user)
        self.scorer = BatchScorer(
            model=self.model,
            ruleset=ruleset,
            engine=self.engine,
            detector=s.detector,
            track=s.track,
            max_message_bytes=s.batch.max_message_bytes,
            include_features=s.output.include_features,
            alert_includes_transaction=s.output.alert_includes_transaction,
            alerts=s.output.alerts,
            dead_letters=s.output.dead_letters,
            slice_=s.slice,
        )
        self.metrics.set_model(self.model.version, FEATURE_SET_VERSION)
        self.metrics.set_rules(ruleset.version)
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self._brokers_up = False
        self._assigned = False
        self._rebuilding = False
        self._delivery_error: str | None = None
        self._pending: dict[tuple[str, int], int] = {}
        self._pending_since: float | None = None
        self._config_stamp = _FileStamp.of(config_path) if config_path else None
        self._next_reload_check = time.monotonic() + s.reload_interval_s
        self.health: HealthServer | None = None
        self.processed = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to drain and exit (what SIGTERM does)."""
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "shutting down"
        if self._rebuilding:
            return False, "rebuilding feature state"
        if not self._brokers_up:
            return False, "no Kafka broker reachable"
        if not self._assigned:
            return False, "waiting for a partition assignment"
        return True, f"ready: model {self.model.version}, rules {self.scorer.ruleset.version}"

    def run(self) -> None:
        s = self.settings
        log.info(
            "scorer starting",
            config=s.redacted(),
            model=self.model.version,
            rules=self.scorer.ruleset.version,
        )
        self.health = HealthServer(
            self.metrics.registry,
            s.metrics.host,
            s.metrics.port,
            self.ready,
            lambda: self._heartbeat,
        ).start()
        log.info("metrics listening", port=self.health.port)
        self.producer = Producer(self._producer_config())
        self.consumer = Consumer(self._consumer_config())
        self.consumer.subscribe(
            [s.topics.input],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        consume = self.consumer.consume
        n, timeout = self.settings.batch.max_messages, self.settings.batch.poll_timeout_s
        next_expiry = time.monotonic() + 60.0
        while not self._stop.is_set():
            self._heartbeat = now = time.monotonic()
            self._maybe_reload()
            if now > next_expiry:
                next_expiry = now + 60.0
                self.engine.expire_idle()
            messages = consume(n, timeout)
            if messages:
                self._handle(messages)
            self.producer.poll(0)
            self._maybe_store_offsets()
            if self._delivery_error:
                raise FatalError(f"delivery failed: {self._delivery_error}")

    def _shutdown(self) -> None:
        log.info("draining")
        remaining = self.producer.flush(30)
        if remaining == 0 and not self._delivery_error:
            self._store_pending()
            try:
                self.consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    log.warning("final commit failed", error=str(exc))
        else:
            log.error(
                "not committing: deliveries outstanding or failed",
                remaining=remaining,
                error=self._delivery_error,
            )
        self.consumer.close()
        if self.health:
            self.health.stop()
        log.info("stopped", processed=self.processed)

    # -- the batch ---------------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        records: list[Record] = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(cast(Record, msg))
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", error=str(err))
        if not records:
            return
        self._brokers_up = True
        result = self.scorer.process(records)
        self._produce(result)
        # Offsets grow within a partition, so the last record of each partition wins.
        latest = {(m.topic(), m.partition()): m.offset() for m in records}
        for key, offset in latest.items():
            self._pending[key] = offset + 1  # type: ignore[index,operator]
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._observe(result, len(records), time.perf_counter() - started)

    def _produce(self, result: BatchResult) -> None:
        topics = self.settings.topics
        produce = self._produce_one
        for key, value in result.decisions:
            produce(topics.decisions, key, value)
        for key, value in result.alerts:
            produce(topics.alerts, key, value)
        for dl in result.dead_letters:
            produce(topics.dead_letter, dl.key, dl.value, dl.headers)

    def _produce_one(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _observe(self, result: BatchResult, consumed: int, elapsed: float) -> None:
        m = self.metrics
        base = m.base()
        self.processed += consumed
        for action, count in result.actions.items():
            m.transactions(**base, action=action).inc(count)
        for rule, count in result.rule_hits.items():
            m.rule_hits(**base, rule=rule).inc(count)
        for dl in result.dead_letters:
            m.dead_letters(**base, reason=dl.reason).inc()
        if result.other_track:
            m.other_track.inc(result.other_track)
        for rule, count in result.rule_errors.items():
            m.rule_errors(**base, rule=rule).inc(count)
        m.event_to_decision.observe_many(result.latencies_s)
        m.score.observe_many(result.scores)
        m.batch_size.observe(consumed)
        m.processing.observe(elapsed)

    # -- offsets -----------------------------------------------------------------------------

    def _on_delivery_error(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.metrics.delivery_errors.inc()
            self._delivery_error = f"{msg.topic()}: {err}"

    def _maybe_store_offsets(self) -> None:
        if not self._pending:
            return
        # len(producer) counts undelivered messages *and* delivery reports not yet served, so
        # 0 means every message was acknowledged and any failure has reached _on_delivery_error.
        if len(self.producer) == 0 or (
            self._pending_since is not None
            and time.monotonic() - self._pending_since > self.settings.batch.commit_interval_s
            and self.producer.flush(30) == 0  # under steady load the queue is never empty
        ):
            self._store_pending()

    def _store_pending(self, only: set[tuple[str, int]] | None = None) -> None:
        if self._delivery_error or not self._pending:
            return
        keys = [k for k in self._pending if only is None or k in only]
        if not keys:
            return
        offsets = [TopicPartition(t, p, self._pending.pop((t, p))) for t, p in keys]
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:
            log.warning("store_offsets failed", error=str(exc))
        if not self._pending:
            self._pending_since = None

    # -- rebalancing and state rebuild -------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._stop.is_set():
            # An assignment delivered while close() leaves the group (another member left
            # at the same moment): nothing will be scored, so rebuild nothing. Found by the
            # scale-down test, where the rebuild's committed() timed out inside close().
            log.info("partitions assigned while stopping", partitions=len(partitions))
            return
        self._rebuilding = True
        try:
            if self.settings.state.replay:
                self._rebuild(consumer, partitions)
        finally:
            self._rebuilding = False
            self._assigned = True
        self.metrics.users_in_state.set(self.engine.user_count())
        log.info("partitions assigned", partitions=[p.partition for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish what was scored for these partitions and commit it before giving them up.
        if self.producer.flush(30) == 0:
            revoked = {(p.topic, p.partition) for p in partitions}
            self._store_pending(revoked)
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    log.warning("commit on revoke failed", error=str(exc))
        self._forget(partitions)
        log.info("partitions revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._pending.pop((p.topic, p.partition), None)
        self._forget(partitions)
        log.warning("partitions lost", partitions=[p.partition for p in partitions])

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.engine.drop_partition(p.partition)
            self.metrics.forget_partition(p.partition)
        self.metrics.users_in_state.set(self.engine.user_count())

    def _rebuild(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Replay each new partition up to its committed offset through the feature engine."""
        committed = consumer.committed(partitions, timeout=30)
        replayer = Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": f"{self.settings.kafka.group_id}.replay",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            for tp in committed:
                if tp.offset == OFFSET_INVALID or tp.offset <= 0:
                    continue
                n = self._replay_partition(replayer, tp)
                self.metrics.replayed.inc(n)
                log.info(
                    "state rebuilt", partition=tp.partition, replayed=n, until_offset=tp.offset
                )
        finally:
            replayer.close()

    def _replay_partition(self, replayer: Consumer, tp: TopicPartition) -> int:
        end = tp.offset
        low, _high = replayer.get_watermark_offsets(
            TopicPartition(tp.topic, tp.partition), timeout=10
        )
        start = max(low, end - self.settings.state.replay_max_messages)
        start = max(start, self._time_bounded_start(replayer, tp, low, end))
        if start >= end:
            return 0
        replayer.assign([TopicPartition(tp.topic, tp.partition, start)])
        replayed, position = 0, start
        deadline = time.monotonic() + 600
        while position < end and time.monotonic() < deadline:
            batch = replayer.consume(5000, 0.1)
            usable: list[Record] = []
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        position = end
                    continue
                off = msg.offset()
                if off is None or off >= end:
                    position = end
                    break
                usable.append(cast(Record, msg))
                position = off + 1
            replayed += self.scorer.replay(usable)
        replayer.unassign()
        return replayed

    def _time_bounded_start(
        self, replayer: Consumer, tp: TopicPartition, low: int, end: int
    ) -> int:
        """Where the history horizon begins, by record timestamp (if the broker can tell)."""
        horizon_ms = int(self.settings.features.history_hours * 3600 * 1000) + 3_600_000
        replayer.assign([TopicPartition(tp.topic, tp.partition, end - 1)])
        last = None
        deadline = time.monotonic() + 10
        while last is None and time.monotonic() < deadline:
            for msg in replayer.consume(1, 0.2):
                if msg.error() is None:
                    last = msg
        replayer.unassign()
        if last is None:
            return low
        _, ts = last.timestamp()
        found = replayer.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, ts - horizon_ms)], timeout=10
        )
        offset = found[0].offset if found else -1
        return offset if low <= offset < end else low

    # -- hot reload --------------------------------------------------------------------------

    def _maybe_reload(self) -> None:
        if self.config_path is None or time.monotonic() < self._next_reload_check:
            return
        self._next_reload_check = time.monotonic() + self.settings.reload_interval_s
        stamp = _FileStamp.of(self.config_path)
        if stamp is None or stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        base = self.metrics.base()
        try:
            rules, decision, slice_ = read_reloadable(self.config_path)
            ruleset = compile_rules(rules, decision)
        except (RuleCompileError, ValueError, OSError) as exc:
            self.metrics.rules_reloads(**base, result="error").inc()
            log.error(
                "rules reload rejected; keeping the running rules",
                error=str(exc),
                running=self.scorer.ruleset.version,
            )
            return
        if slice_ != self.scorer.slice:
            # Every track keeps every user's state, so the handover is warm.
            log.info("user slice changed", start=slice_.start, end=slice_.end)
            self.scorer.slice = slice_
        if ruleset.version == self.scorer.ruleset.version:
            return
        # Swapped between batches: a batch sees the old or the new rules, never a mix.
        self.scorer.ruleset = ruleset
        self.metrics.set_rules(ruleset.version)
        self.metrics.rules_reloads(**base, result="ok").inc()
        log.info("rules reloaded", rules_version=ruleset.version, rules=len(ruleset.rules))

    # -- client configuration and callbacks --------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        k = self.settings.kafka
        return {
            **k.client_config(),
            "group.id": k.group_id,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": int(self.settings.batch.commit_interval_s * 1000),
            "auto.offset.reset": k.auto_offset_reset,
            "partition.assignment.strategy": "cooperative-sticky",
            "statistics.interval.ms": 2000,
            "stats_cb": self._on_stats,
            "error_cb": self._on_error,
            "fetch.wait.max.ms": 10,
        }

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self.settings.kafka.client_config(),
            "linger.ms": 5,
            "enable.idempotence": True,
            "queue.buffering.max.messages": 500_000,
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery_error,
            "error_cb": self._on_error,
        }

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._brokers_up = False
        if err.fatal():
            self._delivery_error = f"fatal client error: {err}"
        log.warning("kafka error", error=str(err))

    def _on_stats(self, raw: str) -> None:
        stats = json.loads(raw)
        self._brokers_up = brokers_up(stats)
        topic = stats.get("topics", {}).get(self.settings.topics.input, {})
        for pid, p in topic.get("partitions", {}).items():
            lag = p.get("consumer_lag", -1)
            if int(pid) >= 0 and lag >= 0 and p.get("fetch_state") == "active":
                self.metrics.set_lag(int(pid), lag)
        self.metrics.users_in_state.set(self.engine.user_count())
        self.metrics.ready.set(1 if self.ready()[0] else 0)


class Stoppable(Protocol):
    def stop(self) -> None: ...


def brokers_up(stats: dict[str, Any]) -> bool:
    """From librdkafka's statistics: is any real broker connection up?"""
    return any(
        b.get("state") == "UP" and b.get("nodeid", -1) >= 0
        for b in stats.get("brokers", {}).values()
    )


def install_signal_handlers(service: Stoppable) -> None:
    import signal

    def _handle(signum: int, _frame: object) -> None:
        log.info("signal received, draining", signal=signum)
        service.stop()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


def configure_logging(level: str = "info") -> None:
    import logging

    structlog.configure(
        processors=[
            mask_event,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
    )
