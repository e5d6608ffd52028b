"""The one place that talks to the Kubernetes API.

Writes are server-side applies with a fixed field manager (``fraud-operator``), forced so the
operator wins conflicts on the fields it owns. An object whose hash annotation matches and
whose live state still holds every field the operator sets is left alone (no write); anything
else - a hand edit, a deleted child - is re-applied. Not-found and conflicts are explicit,
logged outcomes, never exceptions escaping into kopf.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    ConflictError,
    NotFoundError,
    ResourceNotFoundError,
)

from fraud_operator.builders import HASH_ANNOTATION, MANAGER, ApiVersions
from fraud_operator.builders.names import INSTANCE
from fraud_operator.detector_cache import version_of
from fraud_operator.spec import GROUP, VERSION

log = logging.getLogger("fraud_operator.kube")
Outcome = Literal["created", "updated", "unchanged", "gone"]


class Unread:
    """A live object nobody has read yet (as opposed to None: read, and absent)."""


UNREAD = Unread()


def is_subset(desired: Any, live: Any) -> bool:
    """Does ``live`` hold every value of ``desired``? (The API server adds defaults and status;
    those are not drift. It also drops empty lists and maps, such as a container's ``env: []``:
    not drift either. Taking that for drift re-applied the Deployment on every pass, and each
    apply's MODIFIED event brought the next pass: a loop per detector without Kafka auth.)"""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            is_subset(v, live[k]) if k in live else v in ([], {}) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(a, b) for a, b in zip(desired, live, strict=True))
        )
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return bool(desired == live)


def has_labels(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    found = obj.get("metadata", {}).get("labels") or {}
    return all(found.get(k) == v for k, v in labels.items())


def controlled_by(obj: dict[str, Any], owner_uid: str) -> bool:
    return any(
        ref.get("uid") == owner_uid and ref.get("controller")
        for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )


def detector_of(body: Mapping[str, Any]) -> str | None:
    """The FraudDetector a child belongs to, by its ``app.kubernetes.io/instance`` label: as
    the lists of old did, and unlike the owner reference, it outlives a delete with
    ``--cascade=orphan`` (the re-created detector finds its tracks running)."""
    labels = body.get("metadata", {}).get("labels") or {}
    return str(labels[INSTANCE]) if INSTANCE in labels else None


# Of a child's metadata, what a pass reads: the rest (managedFields above all) is dropped.
_KEPT_METADATA = ("name", "namespace", "labels", "annotations", "ownerReferences", "generation")
# Of a Deployment's status, what the detector's status is made of.
_KEPT_STATUS = ("replicas", "readyReplicas", "updatedReplicas")


def kept(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a child: its metadata of note and everything it declares,
    but no status (a Deployment's replica counts excepted)."""
    meta = body["metadata"]
    obj = {k: v for k, v in body.items() if k not in ("metadata", "status")}
    obj["metadata"] = {k: meta[k] for k in _KEPT_METADATA if k in meta}
    # Only the operator's own annotations: the controller's `deployment.kubernetes.io/revision`
    # (set just after creation) would otherwise bring a pass that finds nothing to do.
    notes = obj["metadata"].get("annotations") or {}
    obj["metadata"]["annotations"] = {k: v for k, v in notes.items() if k.startswith(f"{GROUP}/")}
    if body.get("kind") == "Deployment":
        status = body.get("status") or {}
        obj["status"] = {k: status[k] for k in _KEPT_STATUS if k in status}
    return obj


def packed(body: Mapping[str, Any]) -> bytes:
    """:func:`kept` as compact JSON (keys sorted, so equal objects give equal bytes): what the
    index holds. A thousand detectors' children as Python dicts were the operator's largest
    use of memory, and the raw watch events they pointed into could not be freed."""
    return _ENCODER.encode(kept(body))


def unpacked(data: bytes) -> dict[str, Any]:
    found: dict[str, Any] = _DECODER.decode(data)
    return found


_ENCODER: Final = msgspec.json.Encoder(order="deterministic")
_DECODER: Final = msgspec.json.Decoder()


def _plain(_client: Any, data: Any) -> Any:
    """The dynamic client's answer as the JSON it was: a dict, not a ResourceInstance tree
    (which cost more CPU and memory than the request itself, and was made into a dict again)."""
    return data


PLAIN: Final = {"serializer": _plain}
# How long the operator trusts its own write over a watch that has not delivered it yet.
RECENT_S: Final = 30.0


@dataclass(frozen=True)
class Written:
    """A child the operator created (``obj``, :func:`packed`) or deleted (``obj`` None) at
    ``at``, until the watch has caught up with it."""

    at: float
    obj: bytes | None


def load_config(connections: int = 4) -> client.ApiClient:
    """A client for the pod's ServiceAccount (or the kubeconfig), keeping up to
    ``connections`` connections open (more threads than that would open new ones, each a TLS
    handshake for the API server)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


@dataclass
class Kube:
    api: client.ApiClient

    def __post_init__(self) -> None:
        self.dynamic = DynamicClient(self.api)  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api(self.api)
        # The dynamic client's discovery cache is not thread-safe: kopf's worker threads
        # looking kinds up at once raced it into KeyErrors ('resources', 'apis') under a
        # burst of creations. Each kind is looked up once, under this lock, and kept.
        self._discovery = threading.Lock()
        self._resources: dict[tuple[str, str], Any] = {}
        # Children created or deleted here, by (namespace, apiVersion, kind, name), until the
        # watches show them: a pass right after the one that created a canary's Deployment
        # must see it running, not recover the rollout as though it were gone.
        self._written: dict[tuple[str, str], dict[tuple[str, str, str], Written]] = {}
        self._written_lock = threading.Lock()

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is None:
            with self._discovery:
                found = self._resources.get(key)
                if found is None:
                    found = self.dynamic.resources.get(api_version=api_version, kind=kind)
                    self._resources[key] = found
        return found

    def serves(self, api_version: str, kind: str) -> bool:
        try:
            self._resource(api_version, kind)
        except ResourceNotFoundError:
            return False
        return True

    def discover(self) -> ApiVersions:
        """Which versions this cluster serves, and which optional CRDs are installed."""
        with self._discovery:
            self.dynamic.resources.invalidate_cache()
            self._resources.clear()
        return ApiVersions(
            autoscaling=next(
                (
                    v
                    for v in ("autoscaling/v2", "autoscaling/v2beta2")
                    if self.serves(v, "HorizontalPodAutoscaler")
                ),
                "autoscaling/v1",
            ),
            policy=next(
                (
                    v
                    for v in ("policy/v1", "policy/v1beta1")
                    if self.serves(v, "PodDisruptionBudget")
                ),
                "policy/v1",
            ),
            keda=self.serves("keda.sh/v1alpha1", "ScaledObject"),
            service_monitor=self.serves("monitoring.coreos.com/v1", "ServiceMonitor"),
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._resource(api_version, kind).get(
                name=name, namespace=namespace, **PLAIN
            )
        except NotFoundError:
            return None
        return found

    def apply(
        self, desired: dict[str, Any], live: dict[str, Any] | Unread | None = UNREAD
    ) -> Outcome:
        """Server-side apply ``desired`` unless ``live`` (read first unless the caller's watch
        already has it, None: absent) holds all of it under the same hash."""
        meta = desired["metadata"]
        kind, name, namespace = desired["kind"], meta["name"], meta["namespace"]
        if isinstance(live, Unread):
            live = self.get(desired["apiVersion"], kind, namespace, name)
        if live is not None:
            same_hash = (live["metadata"].get("annotations") or {}).get(HASH_ANNOTATION) == meta[
                "annotations"
            ][HASH_ANNOTATION]
            body = {k: v for k, v in desired.items() if k != "metadata"}
            if (
                same_hash
                and is_subset(body, live)
                and is_subset({"labels": meta["labels"]}, live["metadata"])
            ):
                return "unchanged"
        resource = self._resource(desired["apiVersion"], kind)
        try:
            resource.server_side_apply(
                body=desired,
                name=name,
                namespace=namespace,
                field_manager=MANAGER,
                force_conflicts=True,
                serialize=False,  # the answer is not read
            )
        except NotFoundError:
            log.info("cannot apply %s %s/%s: its namespace is gone", kind, namespace, name)
            return "gone"
        except ConflictError as exc:  # forced applies do not conflict; a race with a delete may
            log.warning("conflict applying %s %s/%s: %s", kind, namespace, name, exc)
            raise
        outcome: Outcome = "created" if live is None else "updated"
        if live is None and (detector := detector_of(desired)) is not None:
            self._remember(detector, desired, desired)  # a new object's status is empty
        log.info("%s %s %s/%s", outcome, kind, namespace, name)
        return outcome

    def _remember(
        self, detector: str, ref: Mapping[str, Any], obj: Mapping[str, Any] | None
    ) -> None:
        meta = ref["metadata"]
        child = (ref["apiVersion"], ref["kind"], meta["name"])
        written = Written(time.monotonic(), packed(obj) if obj is not None else None)
        with self._written_lock:
            self._written.setdefault((meta["namespace"], detector), {})[child] = written

    def children(
        self,
        namespace: str,
        detector: str,
        watched_objects: Iterable[bytes],
        watched: frozenset[tuple[str, str]],
    ) -> Children:
        """``detector``'s children: what the watches hold, with what this operator created or
        deleted since and the watches have not delivered yet (forgotten once they have, or
        after RECENT_S)."""
        objects = (unpacked(o) for o in watched_objects)
        found = {(o["apiVersion"], o["kind"], o["metadata"]["name"]): o for o in objects}
        now = time.monotonic()
        with self._written_lock:
            written = self._written.get((namespace, detector), {})
            for child, w in list(written.items()):
                if now - w.at > RECENT_S:
                    del written[child]
                elif w.obj is None:  # deleted here
                    if child in found:
                        del found[child]
                    else:
                        del written[child]  # the watch has seen it go
                elif child in found:
                    del written[child]  # the watch has it: trust the watch from now on
                else:
                    found[child] = unpacked(w.obj)  # created here
            if not written:
                self._written.pop((namespace, detector), None)
        return Children(self, namespace, tuple(found.values()), watched)

    def labelled(
        self, api_version: str, kind: str, namespace: str, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The ``kind`` objects in ``namespace`` that carry ``labels`` (one list request)."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        listed = self._resource(api_version, kind).get(
            namespace=namespace, label_selector=selector, **PLAIN
        )
        items: list[dict[str, Any]] = listed.get("items") or []
        return items

    def delete(self, api_version: str, kind: str, namespace: str, name: str, detector: str) -> bool:
        """Delete a child of ``detector`` the current plan no longer wants (e.g. the HPA once
        KEDA scales)."""
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace, **PLAIN)
        except NotFoundError:
            return False
        ref = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"namespace": namespace, "name": name},
        }
        self._remember(detector, ref, None)
        log.info("deleted %s %s/%s (no longer wanted)", kind, namespace, name)
        return True

    def secret_keys(self, namespace: str, names: Iterable[str]) -> dict[str, set[str] | None]:
        """The keys of each Secret (values are never read into memory beyond the API call)."""
        out: dict[str, set[str] | None] = {}
        for name in names:
            try:
                secret = self.core.read_namespaced_secret(name, namespace)
            except client.ApiException as exc:
                if exc.status == 404:
                    out[name] = None
                    continue
                raise
            out[name] = set((secret.data or {}).keys())
        return out

    def detector(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"{GROUP}/{VERSION}", "FraudDetector", namespace, name)

    def ensure_peering(self, name: str, namespaces: Iterable[str] = ()) -> None:
        """kopf needs its peering object to exist: a ClusterKopfPeering, or with ``namespaces``
        a KopfPeering in each; create them once (idempotent)."""
        kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
        resource = self._resource("kopf.dev/v1", kind)
        targets: list[str | None] = [*namespaces] or [None]
        for namespace in targets:
            metadata = {"name": name} | ({"namespace": namespace} if namespace else {})
            try:
                resource.create(
                    body={"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": metadata},
                    namespace=namespace,
                )
                log.info("created %s %s", kind, name)
            except ConflictError:
                pass  # another replica (or the chart) created it

    def clear_annotations(self, namespace: str, name: str, keys: Iterable[str]) -> str | None:
        """Remove one-shot annotations (manual rollout overrides) once acted upon; returns the
        detector's new resourceVersion (None if it is gone)."""
        resource = self._resource(f"{GROUP}/{VERSION}", "FraudDetector")
        body = {"metadata": {"annotations": dict.fromkeys(keys)}}
        try:
            answer = resource.patch(
                name=name,
                namespace=namespace,
                body=body,
                content_type="application/merge-patch+json",
                **PLAIN,
            )
        except NotFoundError:  # deleted meanwhile: nothing to clear
            return None
        return version_of(answer)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> str | None:
        """Write the detector's status; returns its new resourceVersion (None if it is gone)."""
        resource = self._resource(f"{GROUP}/{VERSION}", "FraudDetector")
        try:
            answer = resource.status.patch(
                name=name,
                namespace=namespace,
                body={"status": status},
                content_type="application/merge-patch+json",
                **PLAIN,
            )
        except NotFoundError:
            log.info("FraudDetector %s/%s is gone; no status to write", namespace, name)
            return None
        return version_of(answer)

    def event(
        self,
        detector: dict[str, Any],
        *,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> None:
        meta = detector["metadata"]
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{meta['name']}.", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="FraudDetector",
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
                resource_version=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type=type_,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=MANAGER),
            reporting_component=MANAGER,
        )
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except client.ApiException as exc:
            log.warning("could not record event %s: %s", reason, exc.reason)


def secret_value(kube: Kube, namespace: str, name: str, key: str) -> str | None:
    """One Secret value (for the operator's own Kafka metadata query); never logged."""
    import base64

    try:
        secret = kube.core.read_namespaced_secret(name, namespace)
    except client.ApiException:
        return None
    raw = (secret.data or {}).get(key)
    return base64.b64decode(raw).decode() if raw else None


@dataclass(frozen=True)
class Children:
    """One FraudDetector's children as the operator's watches hold them (kopf's index of the
    objects its label selects, fed by one list-and-watch per kind), so a pass reads no child
    from the API server. ``watched`` names the kinds the watches cover: for those, absent here
    means absent. Kinds outside it (optional CRDs such as KEDA's or the ServiceMonitor, Jobs)
    are read from the API server as before, and so is everything when nothing is watched
    (``Children(kube, namespace)``: the reconciler run without kopf, as in unit tests)."""

    kube: Kube
    namespace: str
    objects: tuple[dict[str, Any], ...] = ()
    watched: frozenset[tuple[str, str]] = frozenset()

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        if (api_version, kind) not in self.watched:
            return self.kube.get(api_version, kind, self.namespace, name)
        return next(
            (
                o
                for o in self.objects
                if o["kind"] == kind
                and o["apiVersion"] == api_version
                and o["metadata"]["name"] == name
            ),
            None,
        )

    def live(self, desired: dict[str, Any]) -> dict[str, Any] | Unread | None:
        """What :meth:`Kube.apply` compares ``desired`` with: the watched object, or UNREAD."""
        api_version, kind = desired["apiVersion"], desired["kind"]
        if (api_version, kind) not in self.watched:
            return UNREAD
        return self.get(api_version, kind, desired["metadata"]["name"])

    def labelled(self, api_version: str, kind: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        if (api_version, kind) not in self.watched:
            return self.kube.labelled(api_version, kind, self.namespace, labels)
        return [
            o
            for o in self.objects
            if o["kind"] == kind and o["apiVersion"] == api_version and has_labels(o, labels)
        ]

    def controlled(
        self, api_version: str, kind: str, labels: dict[str, str], owner_uid: str
    ) -> list[str]:
        """Names of the ``kind`` children with ``labels`` that ``owner_uid`` controls."""
        return [
            o["metadata"]["name"]
            for o in self.labelled(api_version, kind, labels)
            if controlled_by(o, owner_uid)
        ]
