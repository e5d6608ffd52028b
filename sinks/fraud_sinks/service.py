"""A sink process: one :class:`~fraud_sinks.handlers.Handler` on the shared Kafka runtime.

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

import random
from typing import Any

from confluent_kafka import Message, TopicPartition
from fraud_runtime.dead_letters import bounded, dead_letter_headers
from fraud_runtime.process import BatchAbandoned, FatalError, KafkaProcess, LoopSettings

from fraud_sinks.config import SinkSettings
from fraud_sinks.handlers import DeadLetter, Handler, StoreUnavailable, make_handler
from fraud_sinks.metrics import SinkMetrics


class SinkService(KafkaProcess):
    """One sink process. ``run()`` blocks until :meth:`stop` (or SIGTERM)."""

    log_name = "fraud_sink"
    commit_each_batch = True

    def __init__(
        self,
        settings: SinkSettings,
        handler: Handler | None = None,
        *,
        retry_budget_s: float = 240.0,
    ) -> None:
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
        self.retry_budget_s = retry_budget_s  # below max.poll.interval.ms: we keep the group

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

    def consumer_overrides(self) -> dict[str, Any]:
        # A batch may be retried for up to retry_budget_s: stay in the group meanwhile.
        return {"max.poll.interval.ms": int((self.retry_budget_s + 60) * 1000)}

    def closing(self) -> None:
        self.handler.close()

    # -- the sink's own work -----------------------------------------------------------------

    def _deliver(self, records: list[Message]) -> list[DeadLetter]:
        """The handler's dead letters for the batch, retrying it while the destination is down
        (capped full-jitter backoff) for at most ``retry_budget_s``."""
        rng, waited, attempt = random.Random(), 0.0, 0
        while True:
            try:
                return self.handler.handle(records)
            except StoreUnavailable as exc:
                self.metrics.failures.inc()
                self.metrics.ready.set(0)
                attempt += 1
                pause = rng.uniform(0, min(self.settings.batch.retry_max_s, 0.5 * 2**attempt))
                if waited + pause > self.retry_budget_s:
                    raise FatalError(f"destination down for {waited:.0f}s: {exc}") from exc
                self.log.warning(
                    "destination down, retrying the batch", error=str(exc), attempt=attempt
                )
                self.metrics.retries.inc()
                if self.wait_alive(pause):
                    # Shutting down: nothing committed, the successor redoes the batch.
                    raise BatchAbandoned from exc
                waited += pause


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
