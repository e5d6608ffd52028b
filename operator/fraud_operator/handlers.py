"""kopf entry points. Each one is a few lines and calls :class:`~fraud_operator.reconcile.
Reconciler`, which does the work; kopf runs these sync handlers in its thread pool."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from prometheus_client import start_http_server

from fraud_operator.builders import MANAGER
from fraud_operator.kube import Kube, load_config
from fraud_operator.metrics import OperatorMetrics
from fraud_operator.reconcile import Reconciler
from fraud_operator.spec import GROUP, KIND, PLURAL, PROJECT_IMAGES, VERSION
from fraud_operator.validation import DEFAULT_ALLOWED_IMAGES

log = logging.getLogger("fraud_operator")
_state: dict[str, Reconciler] = {}
# Set by ``python -m fraud_operator`` before kopf starts.
OPTIONS: dict[str, Any] = {
    "metrics_host": "0.0.0.0",  # noqa: S104 - scraped in-cluster
    "metrics_port": 8080,
    "prometheus_url": os.environ.get("FRAUD_OPERATOR_PROMETHEUS_URL"),
    "namespaces": (),  # empty: every namespace
    "allowed_images": DEFAULT_ALLOWED_IMAGES,
}
# Every detector's timer ticks this often; a settled one that has not changed is skipped
# without an API call (Reconciler.quiet) and gets a full pass only every FULL_RESYNC_S (+-20%).
RESYNC_S = float(os.environ.get("FRAUD_OPERATOR_RESYNC_SECONDS", "30"))
FULL_RESYNC_S = float(os.environ.get("FRAUD_OPERATOR_FULL_RESYNC_SECONDS", "600"))
OWNED = {"app.kubernetes.io/managed-by": MANAGER}


def reconciler() -> Reconciler:
    if "r" not in _state:
        metrics = OperatorMetrics()
        _state["r"] = Reconciler(
            Kube(load_config()),
            metrics,
            prometheus_url=OPTIONS["prometheus_url"],
            allowed_images=tuple(OPTIONS["allowed_images"]),
            default_images=OPTIONS.get("default_images") or PROJECT_IMAGES,
            full_resync_s=FULL_RESYNC_S,
        )
    return _state["r"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and the diff base live in annotations, so status belongs to us alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.enabled = False  # we write our own Events, only on transitions
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 4
    # A FraudDetector deleted while its resync pass runs waits for the pass to end; kopf then
    # re-checks after this many seconds (its default, 60, held deletions for a minute).
    settings.background.cancellation_polling = 2
    namespaces = tuple(OPTIONS["namespaces"])
    if namespaces:
        # Watching named namespaces needs no cluster-wide right: kopf's scans of namespaces and
        # CRDs (for ones created later) are off, so the FraudDetector CRD must exist at start.
        settings.scanning.disabled = True
        if not reconciler().kube.serves(f"{GROUP}/{VERSION}", KIND):
            raise kopf.PermanentError(f"the {KIND} CRD is not installed: install it, then start")
    if OPTIONS.get("peering"):
        reconciler().kube.ensure_peering(OPTIONS["peering"], namespaces)
    if OPTIONS["metrics_port"]:
        start_http_server(
            OPTIONS["metrics_port"],
            addr=OPTIONS["metrics_host"],
            registry=reconciler().metrics.registry,
        )


# A failed pass (the API server answering 500 or 409, or away) is retried in seconds, not
# after kopf's default minute: every pass is idempotent, so retrying soon is safe.
RETRY_S = 3.0


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_S)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_S)
@kopf.on.update(GROUP, VERSION, PLURAL, backoff=RETRY_S)
def on_change(namespace: str | None, name: str, **_: Any) -> None:
    reconciler()(namespace or "", name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_S, initial_delay=RESYNC_S, backoff=RETRY_S)
def resync(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    """Rollouts and problems that only a later look can clear (a Secret created, a preflight
    Job finished, Prometheus's verdict) move on; settled detectors are skipped until their
    safety-net pass (drift repaired even if a child event was missed)."""
    reconciler()(namespace or "", name, dict(body))


def _owner_changed(body: kopf.Body, event_type: str | None) -> None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(GROUP):
            namespace = body["metadata"]["namespace"]
            log.info(
                "%s %s changed (%s): reconciling its FraudDetector",
                body.get("kind"),
                body["metadata"]["name"],
                event_type,
            )
            reconciler()(namespace, ref["name"])


for _group, _version, _plural in (
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
):

    @kopf.on.event(_group, _version, _plural, labels=OWNED, id=f"child-{_plural}")  # type: ignore[arg-type]
    def on_child_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        """A child edited or deleted by hand is put back at once (not at the next resync)."""
        if type in ("MODIFIED", "DELETED"):
            _owner_changed(body, type)
