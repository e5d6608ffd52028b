"""What a sink process exports: every message's outcome, retries, failures, the time a
delivery took and the time from decision to destination, the circuit breaker, and lag."""

from __future__ import annotations

import contextlib

from fraud_runtime.health import LATENCY_BUCKETS
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

END_TO_END_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class SinkMetrics:
    def __init__(self, detector: str, sink: str, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        base = {"detector": detector, "sink": sink}
        names = list(base)
        self.messages = Counter(
            "fraud_sink_messages",
            "Messages a sink consumed, by outcome (delivered, written, duplicate, filtered, "
            "dead_letter)",
            [*names, "outcome"],
            registry=r,
        ).labels
        self.retries = Counter(
            "fraud_sink_retries", "Delivery attempts repeated after a failure", names, registry=r
        ).labels(**base)
        self.failures = Counter(
            "fraud_sink_failures",
            "Deliveries or batch writes that failed (retried, or dead-lettered)",
            names,
            registry=r,
        ).labels(**base)
        self.delivery = Histogram(
            "fraud_sink_delivery_seconds",
            "Wall time of one delivery (webhook post with its retries, or case-store batch)",
            names,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(**base)
        self.end_to_end = Histogram(
            "fraud_sink_end_to_end_seconds",
            "From the scorer's decision to the sink's delivery",
            names,
            buckets=END_TO_END_BUCKETS,
            registry=r,
        ).labels(**base)
        self.circuit_open = Gauge(
            "fraud_sink_circuit_open",
            "1 while the webhook's circuit breaker is open",
            names,
            registry=r,
        ).labels(**base)
        self.labels_recorded = Counter(
            "fraud_sink_labels",
            "Analysts' labels recorded, by result (applied, or pending until the case arrives)",
            [*names, "result"],
            registry=r,
        ).labels
        self.lag = Gauge(
            "fraud_sink_consumer_lag",
            "Messages behind the partition's high watermark",
            [*names, "topic", "partition"],
            registry=r,
        )
        self.ready = Gauge(
            "fraud_sink_ready", "1 when the sink can deliver", names, registry=r
        ).labels(**base)
        self._base = base

    def base(self) -> dict[str, str]:
        return dict(self._base)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(**self._base, topic=topic, partition=str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):
            self.lag.remove(*self._base.values(), topic, str(partition))
