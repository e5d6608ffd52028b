"""The console's Prometheus metrics, served on their own port (``settings.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ConsoleMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "fraud_console_request_seconds", "Server time per request, by route", ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=self.registry,
        )  # fmt: skip
        self.labels_published = Counter(
            "fraud_console_labels_published", "Labels acknowledged by the labels topic",
            registry=self.registry,
        )  # fmt: skip
        self.label_publish_failures = Counter(
            "fraud_console_label_publish_failures",
            "Outbox passes that failed (the labels wait in label_outbox and are retried)",
            registry=self.registry,
        )
        self.outbox_last_success = Gauge(
            "fraud_console_label_outbox_last_success_timestamp_seconds",
            "When the labels outbox was last found empty (every label published)",
            registry=self.registry,
        )
