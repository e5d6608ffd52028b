"""One reconcile pass for one FraudDetector: read it, validate, apply its children, rebuild
its status, record Events for what changed. Every trigger (create, update, resume, the
periodic timer, a child edited or deleted by hand) ends up here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.dynamic.exceptions import DynamicApiError

from fraud_operator import builders, kafka_probe
from fraud_operator.builders import ApiVersions, Detector
from fraud_operator.kube import Kube, secret_value
from fraud_operator.metrics import OperatorMetrics
from fraud_operator.spec import FraudDetectorSpec
from fraud_operator.status import build_status, transitions
from fraud_operator.validation import (
    Problem,
    parse_spec,
    required_secrets,
    rules_version_of,
    validate,
)

log = logging.getLogger("fraud_operator.reconcile")
PartitionProbe = Callable[[FraudDetectorSpec, str | None], int | None]


@dataclass
class Reconciler:
    kube: Kube
    metrics: OperatorMetrics
    probe: PartitionProbe = kafka_probe.partitions
    api_ttl_s: float = 60.0
    _api: tuple[float, ApiVersions] | None = None
    _locks: defaultdict[tuple[str, str], threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock)
    )

    def api_versions(self) -> ApiVersions:
        if self._api is None or time.monotonic() - self._api[0] > self.api_ttl_s:
            self._api = (time.monotonic(), self.kube.discover())
        return self._api[1]

    def __call__(self, namespace: str, name: str) -> str:
        """Reconcile one FraudDetector; returns its phase ("Gone" if it no longer exists)."""
        started = time.perf_counter()
        with self._locks[(namespace, name)]:
            try:
                phase = self._reconcile(namespace, name)
            except Exception:
                self.metrics.reconciles.labels(result="error").inc()
                raise
        self.metrics.reconciles.labels(result="ok").inc()
        self.metrics.duration.observe(time.perf_counter() - started)
        return phase

    def _problems(
        self, body: dict[str, Any], namespace: str
    ) -> tuple[FraudDetectorSpec | None, list[Problem]]:
        parsed = parse_spec(body.get("spec") or {})
        if isinstance(parsed, Problem):
            return None, [parsed]
        secrets = self.kube.secret_keys(namespace, required_secrets(parsed))
        password = None
        auth = parsed.kafka.authentication
        if auth is not None and secrets.get(auth.password_secret.secret_name):
            password = secret_value(
                self.kube,
                namespace,
                auth.password_secret.secret_name,
                auth.password_secret.password,
            )
        partitions = self.probe(parsed, password)
        return parsed, validate(parsed, namespace, secrets, partitions)

    def _reconcile(self, namespace: str, name: str) -> str:
        body = self.kube.detector(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return "Gone"  # children go with it (owner references)
        meta = body["metadata"]
        previous = (body.get("status") or {}).get("conditions") or []
        spec, problems = self._problems(body, namespace)
        deployment = None
        if spec is not None and not problems:
            detector = Detector(name, namespace, meta["uid"], spec)
            api = self.api_versions()
            for child in builders.children(detector, api):
                try:
                    outcome = self.kube.apply(child)
                except DynamicApiError as exc:
                    # Reported, and retried by the next pass (the timer): never a crash loop.
                    what = f"{child['kind']} {child['metadata']['name']}"
                    summary = exc.summary()  # type: ignore[no-untyped-call]
                    problems.append(Problem("ApplyFailed", f"{what}: {summary}"))
                    self.metrics.writes.labels(kind=child["kind"], outcome="error").inc()
                    continue
                self.metrics.writes.labels(kind=child["kind"], outcome=outcome).inc()
            self._prune(detector, api)
            deployment = self.kube.get(
                "apps/v1", "Deployment", namespace, builders.scorer_name(detector)
            )
        else:
            for p in problems:
                self.metrics.invalid.labels(reason=p.reason).inc()
        status = build_status(
            generation=int(meta.get("generation") or 0),
            problems=problems,
            deployment=deployment,
            model_version=spec.model.version if spec else None,
            rules_version=rules_version_of(spec) if spec is not None and not problems else None,
            previous=previous,
            now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self.kube.patch_status(namespace, name, status)
        for c in transitions(previous, status["conditions"]):
            if c["type"] == "Ready" or (c["type"] == "RulesValid" and c["status"] == "False"):
                bad = c["status"] == "False" and c["reason"] not in ("Creating", "ReplicasNotReady")
                self.kube.event(
                    body,
                    type_="Warning" if bad else "Normal",
                    reason=c["reason"],
                    message=c["message"] or c["reason"],
                )
        return str(status["phase"])

    def _prune(self, d: Detector, api: ApiVersions) -> None:
        """Remove the autoscaler kind the spec no longer uses (HPA <-> KEDA)."""
        name = builders.scorer_name(d)
        if api.keda and d.spec.scaling.lag_threshold is not None:
            self.kube.delete_if_ours(api.autoscaling, "HorizontalPodAutoscaler", d.namespace, name)
        elif api.keda:
            self.kube.delete_if_ours("keda.sh/v1alpha1", "ScaledObject", d.namespace, name)
