"""A sink process: consume the scorer's output topics and deliver them somewhere slow (a webhook,
the case store), in its own pod so the scorer's hot path never waits on HTTP or SQL.

At-least-once, with nothing lost: a batch's offsets are committed only after every message in
it was delivered, written, or dead-lettered (and the broker acknowledged the dead letters).
Destinations are idempotent on transaction id, so a redelivered batch changes nothing.

- The **webhook** sink never blocks the stream for long: a destination that stays down is
  dead-lettered (circuit breaker), each alert with the reason in its headers.
- The **case store** never dead-letters for an outage: the batch is retried with capped
  backoff and, if PostgreSQL stays away longer than ``retry_budget_s``, the process exits
  without committing and its successor starts from the same offsets. Rows PostgreSQL refuses
  (a NUL character in a field, say) are found one by one and dead-lettered with the reason.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import msgspec
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from fraud_scorer.contract import Decision, dead_letter_headers
from fraud_scorer.metrics import HealthServer
from fraud_scorer.service import brokers_up
from fraud_scorer.sinks.config import SinkSettings
from fraud_scorer.sinks.metrics import SinkMetrics
from fraud_scorer.sinks.webhook import WebhookSink

log = structlog.get_logger("fraud_sink")
Headers = list[tuple[str, str | bytes | None]]


class FatalError(RuntimeError):
    """The sink cannot go on without risking loss; it exits without committing."""


class StoreUnavailable(RuntimeError):
    """The destination is down; the whole batch is retried later."""


@dataclass(frozen=True)
class DeadLetter:
    msg: Message
    reason: str
    detail: str


class Handler(Protocol):
    def handle(self, records: list[Message]) -> list[DeadLetter]: ...

    def ready(self) -> tuple[bool, str]: ...

    def close(self) -> None: ...


class _LabelMessage(msgspec.Struct, forbid_unknown_fields=False):
    """An analyst's verdict on the labels topic."""

    transaction_id: str
    is_fraud: bool
    by: str
    at: datetime | None = None


class SinkDecision(Decision):
    """The scorer's decision as a sink reads it: the transaction stays raw JSON bytes (``null``
    when absent), so the case store stores it without decoding it."""

    transaction: msgspec.Raw = msgspec.Raw(b"null")  # type: ignore[assignment]

    def transaction_text(self) -> str | None:
        raw = bytes(self.transaction)
        return None if raw == b"null" else raw.decode()


def decode_decision(value: bytes | None) -> SinkDecision:
    if not value:
        raise ValueError("empty message")
    try:
        return msgspec.json.decode(value, type=SinkDecision)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a decision: {exc}") from exc


def as_dict(d: SinkDecision, transaction: str | dict[str, Any] | None) -> dict[str, Any]:
    out = msgspec.structs.asdict(d)
    out["transaction"] = transaction
    return out


class WebhookHandler:
    """Alerts to a Slack-style or JSON webhook, via :class:`WebhookSink`."""

    def __init__(
        self,
        settings: SinkSettings,
        metrics: SinkMetrics,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.metrics = metrics
        self._why: str | None = None
        self.sink = WebhookSink(
            settings.webhook.settings(), sleep=sleep, on_dead_letter=self._note_why
        )

    def _note_why(self, _alert: dict[str, Any], why: str) -> None:
        self._why = why

    def handle(self, records: list[Message]) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        m, sink = self.metrics, self.sink
        for msg in records:
            try:
                d = decode_decision(msg.value())
            except ValueError as exc:
                dead.append(DeadLetter(msg, "undecodable", str(exc)))
                m.messages(**m.base(), outcome="dead_letter").inc()
                continue
            tx = msgspec.json.decode(d.transaction)
            retried, started = sink.retried, time.perf_counter()
            outcome = sink.send(as_dict(d, tx))
            m.retries.inc(sink.retried - retried)
            m.messages(**m.base(), outcome=outcome).inc()
            if outcome == "delivered":
                m.delivery.observe(time.perf_counter() - started)
                m.end_to_end.observe(max(0.0, time.time() - d.scored_at))
            elif outcome == "dead_letter":
                m.failures.inc()
                dead.append(DeadLetter(msg, "webhook_undeliverable", self._why or "unknown"))
            m.circuit_open.set(1 if sink.circuit_open else 0)
        return dead

    def ready(self) -> tuple[bool, str]:
        return True, "circuit open" if self.sink.circuit_open else "delivering"

    def close(self) -> None:
        return None


class CaseStoreHandler:
    """Decisions, alerts and labels into the PostgreSQL case store."""

    def __init__(self, settings: SinkSettings, metrics: SinkMetrics) -> None:
        assert settings.postgres.dsn is not None  # checked by SinkSettings
        self._dsn = settings.postgres.dsn.get_secret_value()
        self._migrate = settings.postgres.migrate
        self._labels_topic = settings.topics.labels
        self.metrics = metrics
        self._conn: Any = None
        self._store: Any = None

    def _connected(self) -> Any:
        import psycopg

        from fraud_scorer.sinks.case_store import CaseStore, migrate

        if self._store is None:
            try:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
                if self._migrate:
                    applied = migrate(self._conn)
                    if applied:
                        log.info("case store migrated", applied=applied)
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(_first_line(exc)) from exc
            self._store = CaseStore(self._conn)
        return self._store

    def handle(self, records: list[Message]) -> list[DeadLetter]:
        from fraud_scorer.sinks.case_store import Label

        dead: list[DeadLetter] = []
        decisions: list[tuple[Message, dict[str, Any]]] = []
        labels: list[tuple[Message, Label]] = []
        for msg in records:
            try:
                if msg.topic() == self._labels_topic:
                    labels.append((msg, _label(msg.value())))
                else:
                    d = decode_decision(msg.value())
                    decisions.append((msg, as_dict(d, d.transaction_text())))
            except (ValueError, UnicodeDecodeError) as exc:
                dead.append(DeadLetter(msg, "undecodable", str(exc)))
        started = time.perf_counter()
        refused = self._write(decisions, labels)
        dead += refused
        m = self.metrics
        m.delivery.observe(time.perf_counter() - started)
        m.messages(**m.base(), outcome="written").inc(len(decisions) + len(labels) - len(refused))
        m.messages(**m.base(), outcome="dead_letter").inc(len(dead))
        now = time.time()
        for _, row in decisions:
            m.end_to_end.observe(max(0.0, now - row["scored_at"]))
        return dead

    def _write(
        self,
        decisions: list[tuple[Message, dict[str, Any]]],
        labels: list[tuple[Message, Any]],
    ) -> list[DeadLetter]:
        """One transaction for the batch; if PostgreSQL refuses its data, find the rows it
        refuses one by one (each is dead-lettered) and write the rest."""
        import psycopg

        store = self._connected()
        try:
            try:
                with self._conn.transaction():
                    store.write([d for _, d in decisions])
                    self._count_labels(store.label([lab for _, lab in labels]))
                return []
            except psycopg.DataError:
                refused = []
                for msg, item in [*decisions, *labels]:
                    try:
                        if isinstance(item, dict):
                            store.write([item])
                        else:
                            self._count_labels(store.label([item]))
                    except psycopg.DataError as exc:
                        refused.append(DeadLetter(msg, "case_store_refused", _first_line(exc)))
                return refused
        except psycopg.OperationalError as exc:
            self.close()
            raise StoreUnavailable(_first_line(exc)) from exc

    def _count_labels(self, result: Any) -> None:
        m = self.metrics
        if result.applied:
            m.labels_recorded(**m.base(), result="applied").inc(result.applied)
        if result.pending:
            m.labels_recorded(**m.base(), result="pending").inc(result.pending)

    def ready(self) -> tuple[bool, str]:
        return (True, "case store connected") if self._store else (False, "case store down")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._store = None


def _label(value: bytes | None) -> Any:
    from fraud_scorer.sinks.case_store import Label

    try:
        lab = msgspec.json.decode(value or b"", type=_LabelMessage)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a label: {exc}") from exc
    at = lab.at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("label 'at' needs a time zone (e.g. 2026-11-22T10:00:00Z)")
    return Label(lab.transaction_id, lab.is_fraud, lab.by, at)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def make_handler(settings: SinkSettings, metrics: SinkMetrics) -> Handler:
    if settings.sink == "webhook":
        return WebhookHandler(settings, metrics)
    return CaseStoreHandler(settings, metrics)


class SinkService:
    """One sink process. ``run()`` blocks until :meth:`stop` (or SIGTERM)."""

    def __init__(
        self,
        settings: SinkSettings,
        handler: Handler | None = None,
        *,
        retry_budget_s: float = 240.0,
    ) -> None:
        self.settings = settings
        self.metrics = SinkMetrics(settings.detector, settings.sink)
        self.handler = handler or make_handler(settings, self.metrics)
        self.retry_budget_s = retry_budget_s  # below max.poll.interval.ms: we keep the group
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self._brokers_up = False
        self._assigned = False
        self._delivery_error: str | None = None
        self.health: HealthServer | None = None
        self.consumed = 0

    def stop(self) -> None:
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "shutting down"
        if not self._brokers_up:
            return False, "no Kafka broker reachable"
        if not self._assigned:
            return False, "waiting for a partition assignment"
        return self.handler.ready()

    def run(self) -> None:
        s = self.settings
        log.info("sink starting", config=s.redacted(), topics=s.input_topics())
        self.health = HealthServer(
            self.metrics.registry, s.metrics.host, s.metrics.port, self.ready, self._beat
        ).start()
        self.producer = Producer(
            {
                **s.kafka.client_config(),
                "linger.ms": 5,
                "enable.idempotence": True,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
            }
        )
        self.consumer = Consumer(
            {
                **s.kafka.client_config(),
                "group.id": s.kafka.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": s.kafka.auto_offset_reset,
                "partition.assignment.strategy": "cooperative-sticky",
                "max.poll.interval.ms": int((self.retry_budget_s + 60) * 1000),
                "statistics.interval.ms": 2000,
                "stats_cb": self._on_stats,
                "error_cb": self._on_error,
            }
        )
        self.consumer.subscribe(
            s.input_topics(), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            while not self._stop.is_set():
                self._heartbeat = time.monotonic()
                batch = self.consumer.consume(s.batch.max_messages, s.batch.poll_timeout_s)
                records = [m for m in batch if self._usable(m)]
                if records:
                    self._brokers_up = True
                    self._deliver(records)
                self.producer.poll(0)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            self.handler.close()
            self.health.stop()
            log.info("stopped", consumed=self.consumed)

    def _beat(self) -> float:
        return self._heartbeat

    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is not None and err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", error=str(err))
        return err is None

    def _deliver(self, records: list[Message]) -> None:
        rng, waited, attempt = random.Random(), 0.0, 0
        while True:
            try:
                dead = self.handler.handle(records)
                break
            except StoreUnavailable as exc:
                self.metrics.failures.inc()
                self.metrics.ready.set(0)
                attempt += 1
                pause = rng.uniform(0, min(self.settings.batch.retry_max_s, 0.5 * 2**attempt))
                if waited + pause > self.retry_budget_s:
                    raise FatalError(f"destination down for {waited:.0f}s: {exc}") from exc
                log.warning("destination down, retrying the batch", error=str(exc), attempt=attempt)
                self.metrics.retries.inc()
                if self._stop.wait(pause):
                    return  # shutting down: nothing committed, the successor redoes the batch
                waited += pause
        for dl in dead:
            self._produce_dead_letter(dl)
        if self.producer.flush(30) != 0 or self._delivery_error:
            raise FatalError(f"dead letters not acknowledged: {self._delivery_error}")
        latest = {(cast(str, m.topic()), cast(int, m.partition())): m.offset() for m in records}
        offsets = [TopicPartition(t, p, cast(int, o) + 1) for (t, p), o in latest.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. the partition moved on: the new owner redelivers
            log.warning("commit failed; the batch will be redelivered", error=str(exc))
        self.consumed += len(records)
        self.metrics.ready.set(1 if self.ready()[0] else 0)

    def _produce_dead_letter(self, dl: DeadLetter) -> None:
        msg = dl.msg
        headers: Headers = list(
            dead_letter_headers(
                msg, dl.reason, dl.detail, self.settings.detector, sink=self.settings.sink
            )
        )
        self.producer.produce(
            self.settings.topics.dead_letter, msg.value(), msg.key(), headers=headers
        )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_error = f"{msg.topic()}: {err}"

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._brokers_up = False
        if err.fatal():
            self._delivery_error = f"fatal client error: {err}"
        log.warning("kafka error", error=str(err))

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = True
        log.info("partitions assigned", partitions=[(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.metrics.forget_partition(p.topic, p.partition)

    def _on_stats(self, raw: str) -> None:
        stats = json.loads(raw)
        self._brokers_up = brokers_up(stats)
        for topic, t in stats.get("topics", {}).items():
            for pid, p in t.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if int(pid) >= 0 and lag >= 0 and p.get("fetch_state") == "active":
                    self.metrics.set_lag(topic, int(pid), lag)
        self.metrics.ready.set(1 if self.ready()[0] else 0)
