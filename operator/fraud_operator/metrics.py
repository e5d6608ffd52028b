"""The operator's own Prometheus metrics (``fraud_operator_*``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            "fraud_operator_reconciles_total", "reconcile passes by result", ["result"], registry=r
        )
        self.duration = Histogram(
            "fraud_operator_reconcile_seconds",
            "duration of one reconcile pass",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.writes = Counter(
            "fraud_operator_child_writes_total",
            "children applied, by kind and outcome (unchanged = no write)",
            ["kind", "outcome"],
            registry=r,
        )
        self.rollout_transitions = Counter(
            "fraud_operator_rollout_transitions_total",
            "rollout state changes, by FraudDetector and reason (Promoted, RolledBack, ...)",
            ["namespace", "name", "reason"],
            registry=r,
        )
        self.detector_ready = Gauge(
            "fraud_operator_detector_ready",
            "1 when the FraudDetector's Ready condition is True",
            ["namespace", "name"],
            registry=r,
        )
        self.invalid = Counter(
            "fraud_operator_invalid_specs_total",
            "reconciles refused by validation, by reason",
            ["reason"],
            registry=r,
        )
