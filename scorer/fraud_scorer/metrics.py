"""The scorer's Prometheus metrics (the endpoints are the runtime's :mod:`fraud_runtime.health`).

Metrics follow Prometheus naming (``fraud_`` prefix, base units, bounded labels) and are
updated once per batch, never per event: per-event latencies and scores go into
:class:`BatchHistogram`, which bins a whole numpy array at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from fraud_runtime.health import LATENCY_BUCKETS
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

SCORE_BUCKETS = (*(round(0.05 * i, 2) for i in range(1, 20)), 0.97, 0.99)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)


class BatchHistogram(Collector):
    """A histogram fed with whole arrays: ``observe_many`` costs one ``searchsorted``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labels: dict[str, str],
        registry: CollectorRegistry,
    ) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.labels = labels
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: npt.NDArray[np.floating[Any]]) -> None:
        if values.size == 0:
            return
        idx = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def snapshot(self) -> tuple[npt.NDArray[np.int64], float]:
        with self._lock:
            return self._counts.copy(), self._sum

    def collect(self) -> Iterable[HistogramMetricFamily]:
        counts, total = self.snapshot()
        cumulative = np.cumsum(counts)
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labels))
        bucket_pairs = [
            (repr(float(b)) if b != int(b) else f"{b:.1f}", int(c))
            for b, c in zip(self.bounds, cumulative[:-1], strict=True)
        ]
        bucket_pairs.append(("+Inf", int(cumulative[-1])))
        family.add_metric(list(self.labels.values()), bucket_pairs, total)
        yield family


class ScorerMetrics:
    """Every metric one scorer process exports, bound to its detector and track."""

    def __init__(self, detector: str, track: str, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        base = {"detector": detector, "track": track}
        names = list(base)
        self.transactions = Counter(
            "fraud_transactions", "Transactions scored, by action", [*names, "action"], registry=r
        ).labels
        self.dead_letters = Counter(
            "fraud_dead_letters",
            "Messages sent to the dead-letter topic, by reason",
            [*names, "reason"],
            registry=r,
        ).labels
        self.other_track = Counter(
            "fraud_other_track_transactions",
            "Transactions of users in another track's slice (features kept, not decided)",
            names,
            registry=r,
        ).labels(**base)
        self.rule_hits = Counter(
            "fraud_rule_hits", "Rule matches, by rule", [*names, "rule"], registry=r
        ).labels
        self.rule_errors = Counter(
            "fraud_rule_errors",
            "Rule evaluations that failed, by rule",
            [*names, "rule"],
            registry=r,
        ).labels
        self.model_errors = Counter(
            "fraud_scoring_errors", "Batches the model failed to score", names, registry=r
        ).labels(**base)
        self.delivery_errors = Counter(
            "fraud_delivery_errors",
            "Produced messages the broker did not accept",
            names,
            registry=r,
        ).labels(**base)
        self.processing = Histogram(
            "fraud_batch_processing_seconds",
            "Wall time to score and produce one batch",
            names,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(**base)
        self.batch_size = Histogram(
            "fraud_batch_size",
            "Messages per consumed batch",
            names,
            buckets=BATCH_BUCKETS,
            registry=r,
        ).labels(**base)
        self.event_to_decision = BatchHistogram(
            "fraud_event_to_decision_seconds",
            "From the record's Kafka timestamp to its decision being produced",
            LATENCY_BUCKETS,
            base,
            r,
        )
        self.score = BatchHistogram(
            "fraud_score", "Model fraud probability", SCORE_BUCKETS, base, r
        )
        self.consumer_lag = Gauge(
            "fraud_consumer_lag",
            "Messages behind the partition's high watermark",
            [*names, "partition"],
            registry=r,
        )
        self.users_in_state = Gauge(
            "fraud_state_users", "Users held in feature state", names, registry=r
        ).labels(**base)
        self.replayed = Counter(
            "fraud_state_replayed_messages",
            "Messages replayed to rebuild feature state",
            names,
            registry=r,
        ).labels(**base)
        self.model_info = Gauge(
            "fraud_model_info",
            "The loaded model (value 1)",
            [*names, "model_version", "feature_set"],
            registry=r,
        )
        self.rules_info = Gauge(
            "fraud_rules_info",
            "The loaded rule set (value 1)",
            [*names, "rules_version"],
            registry=r,
        )
        self.rules_reloads = Counter(
            "fraud_rules_reloads",
            "Rule reload attempts, by result",
            [*names, "result"],
            registry=r,
        ).labels
        self.ready = Gauge(
            "fraud_scorer_ready", "1 when the scorer is ready", names, registry=r
        ).labels(**base)
        self._base = base

    def set_model(self, version: str, feature_set: str) -> None:
        self.model_info.clear()
        self.model_info.labels(**self._base, model_version=version, feature_set=feature_set).set(1)

    def set_rules(self, version: str) -> None:
        self.rules_info.clear()
        self.rules_info.labels(**self._base, rules_version=version).set(1)

    def set_lag(self, partition: int, lag: int) -> None:
        self.consumer_lag.labels(**self._base, partition=str(partition)).set(lag)

    def forget_partition(self, partition: int) -> None:
        with contextlib.suppress(KeyError):
            self.consumer_lag.remove(*self._base.values(), str(partition))

    def base(self) -> dict[str, str]:
        return dict(self._base)
