"""The scorer process: :class:`~fraud_scorer.pipeline.BatchScorer` on the shared Kafka runtime.

The runtime (:mod:`fraud_runtime.process`) owns the loop, offsets, rebalances and health; this
class only says what a batch is (score it, produce decisions, alerts and dead letters, count it)
and coordinates the scorer's own units: state rebuild on assignment
(:mod:`~fraud_scorer.state_rebuild`) and rules hot reload (:mod:`~fraud_scorer.rules_reload`).

Offsets are stored once every output of a batch was acknowledged and committed by librdkafka
in the background, so a successor re-scores at most ``batch.commit_interval_s`` of work;
decisions are keyed by transaction id, so duplicates are recognisable downstream.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Consumer, Message, TopicPartition
from fraud_runtime.process import KafkaProcess, LoopSettings, RetryBatch

from fraud_scorer import feature_sets
from fraud_scorer.config import ScorerSettings
from fraud_scorer.entity_table import EntityTable, TableMetrics
from fraud_scorer.metrics import ScorerMetrics
from fraud_scorer.model import Model, load_model
from fraud_scorer.pipeline import BatchResult, BatchScorer, Record
from fraud_scorer.rules import compile_rules
from fraud_scorer.rules_reload import Reloaded, RulesReloader
from fraud_scorer.state_rebuild import StateRebuilder

_MODEL_ERROR_LOG_EVERY_S = 10.0
# Idle users are dropped this often (a pass over every user, so not every batch).
_EXPIRY_EVERY_S = 60.0


class ScorerService(KafkaProcess):
    """One scorer process. ``run()`` blocks until :meth:`stop` (or SIGTERM) and returns."""

    log_name = "fraud_scorer"

    def __init__(
        self,
        settings: ScorerSettings,
        *,
        config_path: Path | None = None,
        model: Model | None = None,
    ) -> None:
        self.settings = s = settings
        self.metrics = ScorerMetrics(s.detector, s.track)
        super().__init__(
            kafka=s.kafka,
            metrics=s.metrics,
            registry=self.metrics.registry,
            topics=[s.topics.input],
            loop=LoopSettings(
                s.batch.max_messages, s.batch.poll_timeout_s, s.batch.commit_interval_s
            ),
            ready_gauge=self.metrics.ready,
            dead_letter_topic=s.topics.dead_letter,
        )
        f = s.features
        self.features = feature_sets.from_settings(
            f.definitions, f.history_hours, f.max_events_per_user
        )
        self.model = model or load_model(
            s.model.path, digest=s.model.digest, features=self.features
        )
        ruleset = compile_rules(s.rules, s.decision, self.features)
        self.table: EntityTable | None = None
        if self.features.staged is not None and s.topics.entity_features is not None:
            self.table = EntityTable(
                s.kafka,
                s.topics.entity_features,
                TableMetrics(self.metrics.registry, s.detector, s.track),
                self.features.version,
            )
        self.engine = self.features.make_engine(None if self.table is None else self.table.rows_of)
        self.scorer = BatchScorer(
            model=self.model,
            ruleset=ruleset,
            engine=self.engine,
            detector=s.detector,
            track=s.track,
            max_message_bytes=s.batch.max_message_bytes,
            include_features=s.output.include_features,
            alert_includes_transaction=s.output.alert_includes_transaction,
            carry_fields=s.output.carry_fields,
            alerts=s.output.alerts,
            dead_letters=s.output.dead_letters,
            slice_=s.slice,
            on_model_error=s.model.on_error,
            feature_names=self.features.names,
        )
        self.rebuilder = StateRebuilder(
            kafka=s.kafka,
            history_hours=self.features.history_hours,
            max_messages=s.state.replay_max_messages,
            replay=self.scorer.replay,
            alive=self.beat,
        )
        self.reloader = (
            RulesReloader(config_path, s.reload_interval_s, self.features) if config_path else None
        )
        self.metrics.set_model(self.model.version, self.features.version)
        self.metrics.set_rules(ruleset.version)
        self._rebuilding = False
        self._model_failures = 0
        self._next_model_error_log = 0.0
        self._next_expiry = time.monotonic() + _EXPIRY_EVERY_S

    # -- the runtime's hooks -----------------------------------------------------------------

    def starting(self) -> None:
        self.log.info(
            "scorer starting",
            config=self.settings.redacted(),
            model=self.model.version,
            rules=self.scorer.ruleset.version,
        )
        if self.table is not None:
            self.table.start()

    def closing(self) -> None:
        if self.table is not None:
            self.table.stop()

    def busy(self) -> str | None:
        if self._rebuilding:
            return "rebuilding feature state"
        if self.table is not None and not self.table.loaded.is_set():
            return "reading the entity table"
        return None

    def ready_detail(self) -> tuple[bool, str]:
        return True, f"ready: model {self.model.version}, rules {self.scorer.ruleset.version}"

    def tick(self) -> None:
        self._maybe_reload()
        now = time.monotonic()
        if now > self._next_expiry:
            self._next_expiry = now + _EXPIRY_EVERY_S
            self.engine.expire_idle()

    def handle(self, records: list[Message]) -> None:
        if self.table is not None and not self.table.loaded.is_set():
            # Scoring before the table is read would use empty entity features: wait (alive).
            raise RetryBatch(1.0)
        started = time.perf_counter()
        result = self.scorer.process(cast(list[Record], records))
        topics = self.settings.topics
        self.produce_all(topics.decisions, result.decisions, result.traces)
        self.produce_all(topics.alerts, result.alerts, result.traces)
        for dl in result.dead_letters:
            self.produce(topics.dead_letter, dl.key, dl.value, dl.headers)
        self._observe(result, len(records), time.perf_counter() - started)

    def on_assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebuilding = True
        try:
            if self.settings.state.replay:
                replayed = self.rebuilder.rebuild(consumer, partitions)
                self.metrics.replayed.inc(sum(replayed.values()))
        finally:
            self._rebuilding = False
        self.metrics.users_in_state.set(self.engine.user_count())

    def on_released(self, partitions: list[TopicPartition]) -> None:
        # The partition's users go with it: its new owner rebuilds them by replay.
        for p in partitions:
            self.engine.drop_partition(p.partition)
            self.metrics.forget_partition(p.partition)
        self.metrics.users_in_state.set(self.engine.user_count())

    def observe_lag(self, topic: str, partition: int, lag: int) -> None:
        self.metrics.set_lag(partition, lag)

    def on_stats(self) -> None:
        self.metrics.users_in_state.set(self.engine.user_count())

    def delivery_failed(self, msg: Message) -> None:
        self.metrics.delivery_errors.inc()

    def consumer_overrides(self) -> dict[str, Any]:
        # The scorer is latency-bound: do not let a fetch wait for a fuller batch.
        return {"fetch.wait.max.ms": 10}

    def producer_overrides(self) -> dict[str, Any]:
        # Room for several batches' decisions, alerts and dead letters in flight.
        return {"queue.buffering.max.messages": 500_000}

    # -- the scorer's own work ---------------------------------------------------------------

    def _observe(self, result: BatchResult, consumed: int, elapsed: float) -> None:
        m = self.metrics
        base = m.base()
        for action, count in result.actions.items():
            m.transactions(**base, action=action).inc(count)
        for rule, count in result.rule_hits.items():
            m.rule_hits(**base, rule=rule).inc(count)
        for dl in result.dead_letters:
            m.dead_letters(**base, reason=dl.reason).inc()
        if result.other_track:
            m.other_track.inc(result.other_track)
        if result.model_error is not None:
            m.model_errors.inc()
            self._log_model_error(result)
        for rule, count in result.rule_errors.items():
            m.rule_errors(**base, rule=rule).inc(count)
        m.event_to_decision.observe_many(result.latencies_s)
        m.score.observe_many(result.scores)
        m.batch_size.observe(consumed)
        m.processing.observe(elapsed)

    def _log_model_error(self, result: BatchResult) -> None:
        """One line per failing model at most every 10 s (the counter has every batch): a
        model that fails on every batch must not flood the log."""
        now = time.monotonic()
        self._model_failures += 1
        if now < self._next_model_error_log:
            return
        self._next_model_error_log = now + _MODEL_ERROR_LOG_EVERY_S
        self.log.error(
            "the model failed on a batch; decided without it",
            error=result.model_error,
            fallback=self.scorer.on_model_error,
            failed_batches=self._model_failures,
        )
        self._model_failures = 0

    def _maybe_reload(self) -> None:
        outcome = self.reloader.check() if self.reloader else None
        if outcome is None:
            return
        base = self.metrics.base()
        if not isinstance(outcome, Reloaded):
            self.metrics.rules_reloads(**base, result="error").inc()
            self.log.error(
                "rules reload rejected; keeping the running rules",
                error=outcome.error,
                running=self.scorer.ruleset.version,
            )
            return
        if outcome.slice != self.scorer.slice:
            # Every track keeps every user's state, so the handover is warm.
            self.log.info("user slice changed", start=outcome.slice.start, end=outcome.slice.end)
            self.scorer.slice = outcome.slice
        ruleset = outcome.ruleset
        if ruleset.version == self.scorer.ruleset.version:
            return
        # Swapped between batches: a batch sees the old or the new rules, never a mix.
        self.scorer.ruleset = ruleset
        self.metrics.set_rules(ruleset.version)
        self.metrics.rules_reloads(**base, result="ok").inc()
        self.log.info("rules reloaded", rules_version=ruleset.version, rules=len(ruleset.rules))
