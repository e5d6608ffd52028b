"""A sink process: one :class:`~fraud_sinks.handlers.Handler` on the shared Kafka runtime.

At-least-once, with nothing lost: a batch's offsets are committed only after every message in
it was delivered, written, or dead-lettered (and the broker acknowledged the dead letters).
Destinations are idempotent on transaction id, so a redelivered batch changes nothing.

- The **webhook** sink never blocks the stream for long: a destination that stays down is
  dead-lettered (circuit breaker), each alert with the reason in its headers.
- The **case store** never dead-letters for an outage: the batch is retried with capped
  jittered backoff (:class:`~fraud_runtime.process.RetryBatch`: the partitions are rewound and
  polled again, so the process stays in its group, alive and not ready, however long
  PostgreSQL is away; it used to exit after 240 s and crash-loop). Rows PostgreSQL refuses (a
  NUL character in a field, say) are found one by one and dead-lettered with the reason.
"""

from __future__ import annotations

import random

from confluent_kafka import Message, TopicPartition
from fraud_runtime.dead_letters import bounded, dead_letter_headers
from fraud_runtime.process import KafkaProcess, LoopSettings, RetryBatch

from fraud_sinks.config import SinkSettings
from fraud_sinks.handlers import DeadLetter, Handler, StoreUnavailable, make_handler
from fraud_sinks.metrics import SinkMetrics


class SinkService(KafkaProcess):
    """One sink process. ``run()`` blocks until :meth:`stop` (or SIGTERM)."""

    log_name = "fraud_sink"
    commit_each_batch = True

    def __init__(self, settings: SinkSettings, handler: Handler | None = None) -> None:
        self.settings = s = settings
        self.metrics = SinkMetrics(s.detector, s.sink)
        super().__init__(
            kafka=s.kafka,
            metrics=s.metrics,
            registry=self.metrics.registry,
            topics=s.input_topics(),
            loop=LoopSettings(batch_size(s), s.batch.poll_timeout_s),
            ready_gauge=self.metrics.ready,
            dead_letter_topic=s.topics.dead_letter,
        )
        # The webhook's rate-limit and retry pauses beat (and never cut a batch short).
        self.handler = handler or make_handler(
            s, self.metrics, lambda t: self.wait_alive(t, interruptible=False)
        )
        self._attempt = 0  # consecutive failed tries of the current batch
        self._rng = random.Random()

    # -- the runtime's hooks -----------------------------------------------------------------

    def starting(self) -> None:
        s = self.settings
        self.log.info("sink starting", config=s.redacted(), topics=s.input_topics())

    def ready_detail(self) -> tuple[bool, str]:
        return self.handler.ready()

    def tick(self) -> None:
        self.handler.prepare()  # an idle sink connects too: Ready before the first message

    def handle(self, records: list[Message]) -> None:
        if self.settings.sink != "webhook":
            self._dead_letter(self._deliver(records))
            return
        # A webhook post cannot be taken back: each alert's offset is committed as soon as it
        # is delivered (or dead-lettered), so a sink killed mid-batch re-posts at most the
        # alert in flight, not the batch. At the shipped 5/s a commit per alert costs nothing.
        for msg in records:
            self._dead_letter(self._deliver([msg]))
            self.commit_now([msg])

    def _dead_letter(self, dead: list[DeadLetter]) -> None:
        s = self.settings
        for dl in dead:
            headers = dead_letter_headers(dl.msg, dl.reason, dl.detail, s.detector, sink=s.sink)
            value, headers = bounded(dl.msg.value(), headers)
            self.produce(s.topics.dead_letter, dl.msg.key(), value, headers)

    def on_released(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.metrics.forget_partition(p.topic, p.partition)

    def observe_lag(self, topic: str, partition: int, lag: int) -> None:
        self.metrics.set_lag(topic, partition, lag)

    def closing(self) -> None:
        self.handler.close()

    # -- the sink's own work -----------------------------------------------------------------

    def _deliver(self, records: list[Message]) -> list[DeadLetter]:
        """The handler's dead letters for the batch; while the destination is down, the batch
        is retried after a capped full-jitter backoff, by the runtime (:class:`RetryBatch`)."""
        try:
            dead = self.handler.handle(records)
        except StoreUnavailable as exc:
            self.metrics.failures.inc()
            self.metrics.ready.set(0)
            self._attempt += 1
            cap = min(self.settings.batch.retry_max_s, 0.5 * 2**self._attempt)
            self.log.warning(
                "destination down, retrying the batch", error=str(exc), attempt=self._attempt
            )
            self.metrics.retries.inc()
            raise RetryBatch(self._rng.uniform(0, cap)) from exc
        self._attempt = 0
        return dead


# A webhook batch should take about this long at the configured rate: offsets are committed
# per batch, so a longer batch re-posts more after a kill and can outlast the consumer's poll
# interval (1,000 alerts at the shipped 5/s took 200 s).
_WEBHOOK_BATCH_SECONDS = 30.0


def batch_size(s: SinkSettings) -> int:
    """Messages per batch: the configured size, capped for a webhook at what its rate limit
    lets through in about 30 s (never below its burst)."""
    if s.sink != "webhook":
        return s.batch.max_messages
    w = s.webhook
    return max(
        1, min(s.batch.max_messages, max(w.burst, int(w.rate_per_s * _WEBHOOK_BATCH_SECONDS)))
    )
