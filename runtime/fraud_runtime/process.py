"""The skeleton of every Kafka process: poll -> handle -> deliver -> store offsets -> commit.

A process (the scorer, a sink) subclasses :class:`KafkaProcess` and writes :meth:`handle`, which
turns one batch of records into produced messages (through :meth:`KafkaProcess.produce`) or
side effects. The runtime owns everything around it:

- **at-least-once**: a batch's offsets are stored only after ``handle`` returned and the broker
  acknowledged everything produced for it (:class:`~fraud_runtime.offsets.OffsetTracker`);
  ``commit_each_batch`` processes (the sinks) also wait for that and commit synchronously after
  every batch, the others (the scorer) let librdkafka commit stored offsets in the background;
- **a delivery failure is fatal**: :class:`FatalError`, the process exits without storing, and
  its successor redoes the work from the last committed offset;
- **a destination outage is not**: ``handle`` raises :class:`RetryBatch`, the runtime seeks the
  batch's partitions back, waits (alive, not ready) and polls the same records again, for as
  long as the outage lasts: the process keeps its group membership and never exits for it;
- **rebalances**: partitions given up are finished and committed first (``on_revoke``); lost
  ones are forgotten; subclasses hear of both and of new assignments;
- **health**: ``/healthz`` follows the loop's heartbeat, ``/readyz`` says why the process is not
  ready (stopping, busy, no broker, no assignment, or the subclass's own reason);
- **signals** only set the stop flag; the loop drains, commits once more and closes.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

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
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from fraud_runtime.dead_letters import bounded
from fraud_runtime.health import HealthServer
from fraud_runtime.logs import LOG_LEVELS, configure_logging
from fraud_runtime.offsets import OffsetTracker
from fraud_runtime.settings import KafkaSettings, MetricsSettings

# How long one flush may hold the loop (the heartbeat goes stale after 30 s).
_FLUSH_S = 1.0
_REVOKE_FLUSH_S = 10.0
# Outputs pending this long make the process not ready (it stays alive, and catches up).
_UNACKED_NOT_READY_S = 30.0


# The cyclic collector's thresholds for a process that keeps long-lived state (users, entity
# keys) and allocates per message. Python's default (700, 10, 10) runs a young collection every
# 700 allocations, each one walking survivors again. Reference counting still frees every
# acyclic object at once; only cycles wait. Measured on the scorer process in the bench's
# setting: throughput +26% (+18% at 20,000; docs/performance.md).
GC_THRESHOLDS: Final = (100_000, 50, 100)


def tune_gc() -> None:
    """Start-up objects (settings, model, rules) out of every collection, then fewer young
    collections (:data:`GC_THRESHOLDS`)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class FatalError(RuntimeError):
    """The process cannot go on without risking loss; it exits without committing."""


class BatchAbandoned(Exception):
    """``handle`` gave up on its batch because the process is stopping: nothing is stored,
    and whoever owns the partitions next redoes the batch."""


class RetryBatch(Exception):
    """``handle`` cannot finish its batch now (its destination is down): nothing is stored,
    the batch's partitions are rewound to its first records, and the loop polls them again
    after ``after_s`` (beating, so liveness sees a working process)."""

    def __init__(self, after_s: float) -> None:
        super().__init__(f"retry the batch in {after_s:.1f}s")
        self.after_s = after_s


@dataclass(frozen=True)
class LoopSettings:
    max_messages: int
    poll_timeout_s: float
    # How long handed-over offsets may wait before the loop flushes the producer to store them.
    commit_interval_s: float = 1.0


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


def brokers_up(stats: dict[str, Any]) -> bool:
    """From librdkafka's statistics: is any real broker connection up?"""
    return any(
        b.get("state") == "UP" and b.get("nodeid", -1) >= 0
        for b in stats.get("brokers", {}).values()
    )


class KafkaProcess:
    """One consumer group member with a producer for its outputs. ``run()`` blocks until
    :meth:`stop` (or SIGTERM) and returns; it raises :class:`FatalError` when it must not go
    on."""

    log_name: ClassVar[str] = "fraud"
    commit_each_batch: ClassVar[bool] = False

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        metrics: MetricsSettings,
        registry: CollectorRegistry,
        topics: list[str],
        loop: LoopSettings,
        ready_gauge: _Gauge | None = None,
        dead_letter_topic: str | None = None,
    ) -> None:
        self.log = structlog.get_logger(self.log_name)
        self.kafka = kafka
        self.metrics_settings = metrics
        self.registry = registry
        self.topics = topics
        self.loop = loop
        self.ready_gauge = ready_gauge
        self.dead_letter_topic = dead_letter_topic
        self.offsets = OffsetTracker(loop.commit_interval_s)
        self.health: HealthServer | None = None
        self.consumed = 0
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self._brokers_up = False
        self._assigned = False
        self._delivery_error: str | None = None
        self._unacked_since: float | None = None  # outputs pending past a flush since then
        self._next_flush = 0.0

    # -- what a process writes ---------------------------------------------------------------

    def handle(self, records: list[Message]) -> None:
        """Do the work of one batch; produce outputs with :meth:`produce`."""
        raise NotImplementedError

    def busy(self) -> str | None:
        """Why the process cannot serve right now although its clients are fine (e.g. it is
        rebuilding state), or None."""
        return None

    def ready_detail(self) -> tuple[bool, str]:
        """Readiness once brokers and assignment are fine."""
        return True, "ready"

    def tick(self) -> None:
        """Periodic work between batches (hot reload, expiry); keep it short."""

    def on_assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """New partitions, before their first batch (state rebuild goes here), each with the
        offset it resumes from (``OFFSET_INVALID``: none; the reset policy decides)."""

    def on_released(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked (after their work was committed) or lost."""

    def observe_lag(self, topic: str, partition: int, lag: int) -> None:
        """Consumer lag from librdkafka's statistics, every 2 s."""

    def on_stats(self) -> None:
        """After each statistics callback (refresh gauges here)."""

    def consumer_overrides(self) -> dict[str, Any]:
        return {}

    def producer_overrides(self) -> dict[str, Any]:
        return {}

    def starting(self) -> None:
        """Log the effective configuration."""

    def closing(self) -> None:
        """Release what the process holds besides its Kafka clients."""

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to drain and exit (what SIGTERM does)."""
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "shutting down"
        busy = self.busy()
        if busy:
            return False, busy
        stuck = self._unacked_for()
        if stuck > _UNACKED_NOT_READY_S:
            return False, f"outputs unacknowledged for {stuck:.0f}s (an output topic unavailable?)"
        if not self._brokers_up:
            return False, "no Kafka broker reachable"
        if not self._assigned:
            return False, "waiting for a partition assignment"
        return self.ready_detail()

    def run(self) -> None:
        self.starting()
        tune_gc()
        m = self.metrics_settings
        self.health = HealthServer(self.registry, m.host, m.port, self.ready, self._beat).start()
        self.log.info("metrics listening", port=self.health.port)
        self.producer = Producer(self._producer_config())
        self.consumer = Consumer(self._consumer_config())
        self.consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            self._loop()
        finally:
            self._shutdown()

    def _beat(self) -> float:
        return self._heartbeat

    def beat(self) -> None:
        """The loop is alive: long work inside a batch (a state rebuild, a rate-limited webhook,
        a database outage) calls this so that liveness does not restart a working process."""
        self._heartbeat = time.monotonic()

    def wait_alive(self, seconds: float, *, interruptible: bool = True) -> bool:
        """Wait ``seconds`` in slices of at most a second, beating between them; True as soon
        as a stop is requested (unless ``interruptible`` is False: then the whole wait)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.beat()
            if interruptible:
                if self._stop.wait(min(left, 1.0)):
                    return True
            else:
                time.sleep(min(left, 1.0))
        self.beat()
        return self._stop.is_set()

    def _loop(self) -> None:
        consume = self.consumer.consume
        n, timeout = self.loop.max_messages, self.loop.poll_timeout_s
        while not self._stop.is_set():
            self._heartbeat = time.monotonic()
            self.tick()
            consumed = consume(n, timeout)
            records = [m for m in consumed if m.error() is None]
            if len(records) < len(consumed):
                self._log_errors(consumed)
            if records:
                self._brokers_up = True
                try:
                    self.handle(records)
                except BatchAbandoned:
                    return
                except RetryBatch as retry:
                    self._rewind(records)
                    if self.wait_alive(retry.after_s):
                        return  # stopping: nothing stored, the next owner redoes the batch
                    continue
                self.offsets.done(records)
                self.consumed += len(records)
                if self.commit_each_batch:
                    self._commit_batch()
                    self.publish_ready()
            self.producer.poll(0)
            self._maybe_store()
            if self._delivery_error:
                raise FatalError(f"delivery failed: {self._delivery_error}")

    def _rewind(self, records: list[Message]) -> None:
        """Seek each partition of ``records`` back to its first record in the batch."""
        first: dict[tuple[str, int], int] = {}
        for m in records:
            key = (m.topic() or "", m.partition() or 0)
            offset = m.offset() or 0
            first[key] = min(first.get(key, offset), offset)
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its next owner starts there
                self.log.info("not rewinding a partition", partition=partition, error=str(exc))

    def _log_errors(self, consumed: list[Message]) -> None:
        for msg in consumed:
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                self.log.warning("consumer error", error=str(err))

    def _shutdown(self) -> None:
        self.log.info("draining")
        remaining = self.producer.flush(30)
        if remaining == 0 and not self._delivery_error:
            self._store()
            self._commit("final commit failed")
        else:
            self.log.error(
                "not committing: deliveries outstanding or failed",
                remaining=remaining,
                error=self._delivery_error,
            )
        self.consumer.close()
        self.closing()
        if self.health:
            self.health.stop()
        self.log.info("stopped", consumed=self.consumed)

    # -- producing ---------------------------------------------------------------------------

    def produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None
    ) -> None:
        """Hand one message to the producer, waiting (and serving delivery reports) while its
        queue is full. A message larger than the producer may send becomes a size-bounded stub
        on the dead-letter topic (reason ``output_too_large``): one oversized output must not
        stop the process, and every input stays accounted for."""
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:  # backpressure from the broker: alive, waiting
                self.producer.poll(0.05)
                self.beat()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.MSG_SIZE_TOO_LARGE or self.dead_letter_topic is None:
                    raise
                self.log.warning(
                    "output too large for the producer; dead-lettered as a stub",
                    topic=topic,
                    size=len(value or b""),
                )
                meta = [
                    ("dlq.reason", b"output_too_large"),
                    ("dlq.detail", f"{len(value or b'')} bytes for {topic}".encode()),
                    ("dlq.output.topic", topic.encode()),
                ]
                topic, (value, headers) = self.dead_letter_topic, bounded(value, meta, limit=0)

    def produce_all(
        self,
        topic: str,
        messages: Iterable[tuple[bytes | None, bytes]],
        headers_of: Mapping[bytes, Any] | None = None,
    ) -> None:
        """:meth:`produce` for many (key, value) messages: the producer's own call per
        message, and :meth:`produce`'s waiting or stub only for a message the producer
        refuses (the scorer's decisions: a Python call less per decision). ``headers_of``
        gives some keys their headers (trace context); the others go without."""
        fast = self.producer.produce
        if headers_of:
            for key, value in messages:
                self.produce(topic, key, value, headers_of.get(key) if key else None)
            return
        for key, value in messages:
            try:
                fast(topic, value, key)
            except (BufferError, KafkaException):
                self.produce(topic, key, value)

    # -- offsets -----------------------------------------------------------------------------

    def _maybe_store(self) -> None:
        if not self.offsets:
            return
        # len(producer) counts undelivered messages *and* delivery reports not yet served, so
        # 0 means every message was acknowledged and any failure has reached _on_delivery.
        if len(self.producer) == 0:
            self._acknowledged()
            self._store()
            return
        # Under steady load the queue is never empty: flush briefly once the offsets are
        # overdue. A flush that cannot finish (an output topic is unavailable) is not retried
        # until the next commit interval: scoring goes on, offsets wait, nothing is lost.
        now = time.monotonic()
        if not self.offsets.overdue() or now < self._next_flush:
            return
        if self.producer.flush(_FLUSH_S) == 0:
            self._acknowledged()
            self._store()
        else:
            self._unacked_since = self._unacked_since or now
            self._next_flush = now + self.loop.commit_interval_s

    def _acknowledged(self) -> None:
        self._unacked_since = None
        self._next_flush = 0.0

    def _unacked_for(self) -> float:
        since = self._unacked_since
        return 0.0 if since is None else time.monotonic() - since

    def commit_now(self, records: list[Message]) -> None:
        """Commit progress inside a batch (``commit_each_batch`` processes): once everything
        produced so far is acknowledged, these records' offsets are stored and committed
        without waiting for the broker's answer (the batch's end commits synchronously)."""
        self.offsets.done(records)
        if len(self.producer):
            self._await_outputs()
        self._store()
        try:
            self.consumer.commit(asynchronous=True)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                self.log.warning("progress commit failed", error=str(exc))

    def _await_outputs(self) -> None:
        """Wait for everything produced to be acknowledged, however long an output topic is
        away: alive (beating), not ready, and stopping on request."""
        while self.producer.flush(_FLUSH_S) != 0 and not self._delivery_error:
            self._unacked_since = self._unacked_since or time.monotonic()
            self.beat()
            if self._stop.is_set():
                raise BatchAbandoned
        if self._delivery_error:
            raise FatalError(f"outputs not acknowledged: {self._delivery_error}")
        self._acknowledged()

    def _commit_batch(self) -> None:
        self._await_outputs()
        self._store()
        # A failed commit (the partition moved on, say) means its new owner redelivers.
        self._commit("commit failed; the batch will be redelivered")

    def _store(self, only: set[tuple[str, int]] | None = None) -> None:
        if self._delivery_error:
            return
        offsets = self.offsets.take(only)
        if not offsets:
            return
        try:
            self.consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:
            self.log.warning("store_offsets failed", error=str(exc))

    def _commit(self, failure: str, consumer: Consumer | None = None) -> None:
        try:
            (consumer or self.consumer).commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                self.log.warning(failure, error=str(exc))

    # -- rebalancing -------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._stop.is_set():
            # An assignment delivered while close() leaves the group (another member left at
            # the same moment): nothing will be processed, so prepare nothing. Found by the
            # scorer's scale-down test, where a state rebuild timed out inside close().
            self.log.info("partitions assigned while stopping", partitions=len(partitions))
            return
        try:
            positions = self._positions(consumer, partitions)
            self.on_assigned(consumer, positions)
            if self.kafka.start_from_group is not None:
                consumer.incremental_assign(positions)  # where _positions says, not the reset
        finally:
            self._assigned = True
        self.log.info("partitions assigned", partitions=_names(partitions))

    def _positions(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Where each assigned partition resumes: this group's committed offset, else
        ``start_from_group``'s, else ``OFFSET_INVALID`` (``auto_offset_reset``)."""
        positions: list[TopicPartition] = consumer.committed(partitions, timeout=30)
        other = self.kafka.start_from_group
        lacking = [tp for tp in positions if tp.offset < 0]
        if other is None or not lacking:
            return positions
        peek = Consumer({**self.kafka.client_config(), "group.id": other})
        try:
            theirs = {
                (tp.topic, tp.partition): tp.offset
                for tp in peek.committed(
                    [TopicPartition(tp.topic, tp.partition) for tp in lacking], timeout=30
                )
                if tp.offset >= 0
            }
        finally:
            peek.close()
        for tp in lacking:
            tp.offset = theirs.get((tp.topic, tp.partition), OFFSET_INVALID)
        self.log.info(
            "partitions new to this group start where another group is",
            group=other,
            partitions=len(theirs),
        )
        return positions

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish what was done for these partitions and commit it before giving them up (not
        # for long: this runs inside poll, and an unavailable output topic would stall it).
        if self.producer.flush(_REVOKE_FLUSH_S) == 0:
            self._store({(p.topic, p.partition) for p in partitions})
            self._commit("commit on revoke failed", consumer)
        self.on_released(partitions)
        self.log.info("partitions revoked", partitions=_names(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.offsets.forget((p.topic, p.partition) for p in partitions)
        self.on_released(partitions)
        self.log.warning("partitions lost", partitions=_names(partitions))

    # -- client configuration and callbacks --------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        k = self.kafka
        auto = not self.commit_each_batch
        return {
            **k.client_config(),
            "group.id": k.group_id,
            "enable.auto.commit": auto,
            "enable.auto.offset.store": False,
            **(
                {"auto.commit.interval.ms": int(self.loop.commit_interval_s * 1000)} if auto else {}
            ),
            "auto.offset.reset": k.auto_offset_reset,
            "partition.assignment.strategy": "cooperative-sticky",
            "statistics.interval.ms": 2000,
            "stats_cb": self._on_stats,
            "error_cb": self._on_error,
            **self.consumer_overrides(),
        }

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self.kafka.client_config(),
            "linger.ms": 5,
            "enable.idempotence": True,
            # Never time out a message: an output topic away for longer than librdkafka's
            # default 5 minutes made every delivery fail, and the process exit and start over,
            # in a loop. Permanent errors (an unknown topic, a refused ACL) still fail at once.
            "message.timeout.ms": 0,
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            **self.producer_overrides(),
        }

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.delivery_failed(msg)
            self._delivery_error = f"{msg.topic()}: {err}"

    def delivery_failed(self, msg: Message) -> None:
        """A produced message the broker did not accept (count it)."""

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._brokers_up = False
        if err.fatal():
            self._delivery_error = f"fatal client error: {err}"
        self.log.warning("kafka error", error=str(err))

    def _on_stats(self, raw: str) -> None:
        stats = json.loads(raw)
        self._brokers_up = brokers_up(stats)
        for topic, t in stats.get("topics", {}).items():
            for pid, p in t.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if int(pid) >= 0 and lag >= 0 and p.get("fetch_state") == "active":
                    self.observe_lag(topic, int(pid), lag)
        self.on_stats()
        self.publish_ready()

    def publish_ready(self) -> None:
        if self.ready_gauge is not None:
            self.ready_gauge.set(1 if self.ready()[0] else 0)


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]


class Stoppable(Protocol):
    def stop(self) -> None: ...
    def run(self) -> None: ...


def install_signal_handlers(process: Stoppable, log: Any) -> None:
    """SIGTERM and SIGINT only ask the loop to stop; it drains and commits on its way out."""

    def _handle(signum: int, _frame: object) -> None:
        log.info("signal received, draining", signal=signum)
        process.stop()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


def run_main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str | None,
    log_name: str,
    build: Callable[[Path | None], Stoppable],
    config_errors: tuple[type[Exception], ...] = (ValueError, OSError),
) -> int:
    """``prog --config FILE``: build the process from its settings file and run it until
    SIGTERM. Exit 2 for configuration problems (no restart will fix them), 1 for a
    :class:`FatalError` (a restart resumes from the last commit), 0 after a clean stop."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config", type=Path, help="settings YAML (the operator writes it to a ConfigMap)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=LOG_LEVELS,
        help="the least severe events logged (default: info)",
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    log = structlog.get_logger(log_name)
    try:
        process = build(args.config)
    except config_errors as exc:
        log.error("cannot start", error=describe_error(exc))
        return 2
    install_signal_handlers(process, log)
    try:
        process.run()
    except FatalError as exc:
        log.error("fatal, exiting without committing", error=str(exc))
        return 1
    return 0


def describe_error(exc: BaseException) -> str:
    """An error fit for a log line. A pydantic ValidationError's own text quotes the input it
    refused, which holds the credentials that came from Secrets (a SASL password showed in the
    "cannot start" line): only each error's location and message are kept."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        )
    return str(exc)
