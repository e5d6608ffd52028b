"""kopf entry points. Each one is a few lines and calls :class:`~fraud_operator.reconcile.
Reconciler`, which does the work in kopf's thread pool. The event handlers are async: they
decide on kopf's loop whether an event calls for a pass at all (most do not), and only a pass
takes a worker thread."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any, cast

import kopf
from prometheus_client import start_http_server

from fraud_operator import builders
from fraud_operator.builders import MANAGER
from fraud_operator.kube import Children, Kube, detector_of, load_config, packed
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
# The child kinds kopf lists and watches for the index below, chosen at startup from what the
# cluster serves (a 1.20 cluster has policy/v1beta1, not policy/v1).
WATCHED: set[tuple[str, str]] = set()
# kopf's thread pool (settings.execution.executor), where passes run.
_POOL: list[Executor] = []


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff base (a deep copy of the whole object, managedFields and all) on
    every event of every watched kind, for create/update handlers with diffs. This operator
    has none (:meth:`Reconciler.changed` decides what needs a pass), so there is nothing to
    build, fetch or store: the copies were a tenth of the operator's CPU at start-up."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


WORKERS = 8


def reconciler() -> Reconciler:
    if "r" not in _state:
        metrics = OperatorMetrics()
        _state["r"] = Reconciler(
            Kube(load_config(connections=WORKERS + 2)),
            metrics,
            prometheus_url=OPTIONS["prometheus_url"],
            allowed_images=tuple(OPTIONS["allowed_images"]),
            default_images=OPTIONS.get("default_images") or PROJECT_IMAGES,
            full_resync_s=FULL_RESYNC_S,
        )
    return _state["r"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # we write our own Events, only on transitions
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    # Passes wait on the API server far more than they compute: more of them in flight keep
    # a burst of creations moving (the client's connection pool is sized to match).
    settings.execution.max_workers = WORKERS
    _POOL[:] = [settings.execution.executor]
    # The children are listed and watched once per kind, only the operator's own (selected by
    # the API server, not filtered here), and indexed by their detector: a pass reads them
    # from memory. kopf starts no handler before the first listing is indexed.
    WATCHED.update(builders.watched_kinds(reconciler().api_versions()))
    settings.watching.label_selectors[is_watched_child] = ",".join(
        f"{k}={v}" for k, v in OWNED.items()
    )
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


def is_watched_child(resource: kopf.Resource) -> bool:
    api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
    return (api_version, resource.kind or "") in WATCHED


@kopf.index(is_watched_child)
async def children(body: kopf.Body, **_: Any) -> dict[tuple[str, str], bytes]:
    """The operator's children by ``(namespace, detector)``: what a pass compares its desired
    objects with, prunes, and reads the rollout's tracks and the Deployment's status from.
    Async: it runs on kopf's loop, with no thread hop per event."""
    owner = detector_of(body)
    return {} if owner is None else {(body["metadata"]["namespace"], owner): packed(body)}


# Per child (by uid), a digest of what the operator last saw of it (:func:`packed`).
_last_seen: dict[str, bytes] = {}


def _children(namespace: str, name: str, indexes: dict[str, Any]) -> Children:
    """``name``'s children from the ``children`` index, which kopf passes every handler."""
    index: kopf.Index[tuple[str, str], bytes] = indexes["children"]
    # tuple() copies the store in one C call, which kopf's loop thread cannot interleave with.
    found = tuple(index[(namespace, name)]) if (namespace, name) in index else ()
    return reconciler().kube.children(namespace, name, found, frozenset(WATCHED))


# A pass that fails (the API server answering 500 or 409, or away) is tried again this many
# times, then left to the detector's timer.
ATTEMPTS = 3


async def _pass(
    namespace: str, name: str, indexes: dict[str, Any], body: dict[str, Any] | None = None
) -> None:
    """One pass in a worker thread; it reads its children from the index once it holds the
    detector's lock."""

    def work() -> str:
        return reconciler()(
            namespace, name, body, functools.partial(_children, namespace, name, indexes)
        )

    loop = asyncio.get_running_loop()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            await loop.run_in_executor(_POOL[0] if _POOL else None, work)
            return
        except Exception as exc:  # every pass is idempotent: trying again soon is safe
            again = attempt < ATTEMPTS
            log.log(
                logging.WARNING if again else logging.ERROR,
                "reconciling %s/%s failed (%s: %s); %s",
                namespace,
                name,
                type(exc).__name__,
                exc,
                f"again in {RETRY_S:.0f} s" if again else "the timer will try again",
            )
            if again:
                await asyncio.sleep(RETRY_S)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_detector_event(
    namespace: str | None, name: str, body: kopf.Body, type: str | None, **kwargs: Any
) -> None:
    """Created, edited, deleted, or met at start: one pass. A change of nothing the pass
    reads (our own status write, someone's label) is skipped on kopf's loop. kopf's own
    create/update handlers are not used: their bookkeeping patched every detector twice."""
    namespace, seen = namespace or "", dict(body)
    if type == "DELETED":
        reconciler().detectors.gone((namespace, name))
        await _pass(namespace, name, kwargs)  # it reads the detector gone, and forgets it
        return
    reconciler().detectors.seen((namespace, name), seen)
    if reconciler().changed(namespace, name, seen):
        await _pass(namespace, name, kwargs, seen)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_S, initial_delay=RESYNC_S, backoff=RETRY_S)
def resync(namespace: str | None, name: str, body: kopf.Body, **kwargs: Any) -> None:
    """Rollouts and problems that only a later look can clear (a Secret created, a preflight
    Job finished, Prometheus's verdict) move on; settled detectors are skipped until their
    safety-net pass (drift repaired even if a child event was missed)."""
    namespace = namespace or ""
    reconciler()(namespace, name, dict(body), functools.partial(_children, namespace, name, kwargs))


def _without_finalizer(fn: Callable[..., Any]) -> None:
    """kopf puts a finalizer on every object a timer runs for (to stop the timer before the
    object goes), with no option to leave it off. This timer holds nothing to clean up, and
    the finalizer cost two patches per detector (the first lost to a conflict with the status
    write) and held every ``kubectl delete fd`` while the operator was down. Its registered
    handler is replaced by a copy without; kopf then also removes the finalizer that older
    versions left on detectors."""
    spawning = kopf.get_default_registry()._spawning
    spawning._handlers[:] = [
        dataclasses.replace(h, requires_finalizer=False) if h.fn is fn else h
        for h in spawning._handlers
    ]


_without_finalizer(resync)


@kopf.on.event(is_watched_child, id="child")
async def on_child_event(body: kopf.Body, type: str | None, **kwargs: Any) -> None:
    """A child edited or deleted by hand is put back at once (not at the next resync), and a
    Deployment's new replica counts reach the detector's status."""
    owner = detector_of(body)
    uid = body.get("metadata", {}).get("uid")
    if owner is None or uid is None:
        return
    if type == "DELETED":
        _last_seen.pop(uid, None)
    else:
        # Most events change nothing the operator reads: an HPA's status every sync, a
        # Deployment's conditions and observedGeneration. Those call for no pass.
        digest = hashlib.blake2b(packed(body), digest_size=16).digest()
        if _last_seen.get(uid) == digest or type != "MODIFIED":
            _last_seen[uid] = digest
            return
        _last_seen[uid] = digest
    namespace = body["metadata"]["namespace"]
    log.info(
        "%s %s changed (%s): reconciling its FraudDetector",
        body.get("kind"),
        body["metadata"]["name"],
        type,
    )
    await _pass(namespace, owner, kwargs)
