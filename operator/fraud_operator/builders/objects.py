"""What every builder shares: the detector as builders see it, the API versions the cluster
serves, a track's plan, and the wrapping of a body into an owned, labelled, hashed object, plus
the pod pieces scorer and sink pods have in common (security context, Kafka settings and
credentials, volumes)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from fraud_scorer.feature_defs import FeatureSetDef, needs_stage, parse_feature_set

from fraud_operator.builders.names import labels
from fraud_operator.spec import (
    GROUP,
    KIND,
    PROJECT_IMAGES,
    VERSION,
    DefaultImages,
    FraudDetectorSpec,
    ModelRef,
    Rulebook,
)

HASH_ANNOTATION: Final = f"{GROUP}/spec-hash"
RESTART_ANNOTATION: Final = f"{GROUP}/restart-hash"
# On a scorer Deployment: the full model reference it runs and the users it decides for. The
# rollout's truth about traffic is read back from these (reconcile.live_tracks), not the status.
MODEL_ANNOTATION: Final = f"{GROUP}/model"
USERS_ANNOTATION: Final = f"{GROUP}/users"
CONFIG_DIR: Final = "/etc/fraud"
CA_DIR: Final = "/etc/fraud/kafka-ca"
CLIENT_CERT_DIR: Final = "/etc/fraud/kafka-client"
CLIENT_CERT_FILE: Final = "tls.crt"
CLIENT_KEY_FILE: Final = "tls.key"
PASSWORD_ENV: Final = "FRAUD_KAFKA__SASL_PASSWORD"  # noqa: S105 - a variable name
RUN_AS: Final = 10001


@dataclass(frozen=True)
class Detector:
    """What builders need to know about one FraudDetector."""

    name: str
    namespace: str
    uid: str
    spec: FraudDetectorSpec
    images: DefaultImages = PROJECT_IMAGES

    @property
    def scorer_image(self) -> str:
        return self.images.of(self.spec)["scorer"]

    @property
    def sink_image(self) -> str:
        return self.images.of(self.spec).get("sinks", self.scorer_image)

    @property
    def console_image(self) -> str:
        return self.images.of(self.spec).get("console", self.images.console)

    @property
    def consumer_group(self) -> str:
        return self.spec.consumer_group or f"fraud-scorer-{self.namespace}-{self.name}"


def staged_features(d: Detector) -> FeatureSetDef | None:
    """The detector's feature set when the entity stage computes part of it, else None."""
    if d.spec.features is None:
        return None
    defs = parse_feature_set(d.spec.features)  # validated before any builder runs
    return defs if needs_stage(defs) is not None else None


@dataclass(frozen=True)
class ApiVersions:
    """What the cluster serves; discovered, never assumed (a 1.20 cluster has no
    autoscaling/v2 or policy/v1)."""

    autoscaling: str = "autoscaling/v2"
    policy: str = "policy/v1"
    keda: bool = False
    service_monitor: bool = False


@dataclass(frozen=True)
class TrackPlan:
    """One running track: its model, its rules and the slice of users it decides for.

    stable decides for ``[start, end)`` = ``[weight, 100)`` during a canary, canary for
    ``[0, weight)``, shadow for everyone but writes only to the shadow decisions topic.
    Only stable dead-letters and only stable and canary alert: one of each per message.
    """

    track: str = "stable"
    model: ModelRef | None = None  # None: the spec's model
    start: int = 0
    end: int = 100
    rulebook: Rulebook | None = None  # None: the spec's rules and thresholds

    def model_of(self, d: Detector) -> ModelRef:
        return self.model or d.spec.model

    def rulebook_of(self, d: Detector) -> Rulebook:
        return self.rulebook or Rulebook.of(d.spec)


STABLE = TrackPlan()


def fetch_args(model: ModelRef) -> list[str]:
    """``fraud_scorer.fetch`` / ``fraud_scorer.preflight`` arguments for one artifact."""
    return ["--uri", model.uri, "--digest", model.digest] + (
        ["--allow-http"] if model.allow_http else []
    )


def model_identity(model: ModelRef) -> dict[str, Any]:
    """The pod fields that let a model fetch read object storage as the model's
    ServiceAccount (workload identity); none for a model served over https."""
    return {"serviceAccountName": model.service_account_name} if model.service_account_name else {}


def owner_reference(d: Detector) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": d.name,
        "uid": d.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def owned(
    d: Detector,
    api_version: str,
    kind: str,
    name: str,
    body: dict[str, Any],
    object_labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Wrap ``body`` with metadata: labels, annotations, a controller owner reference (garbage
    collection deletes children with their FraudDetector) and a hash of everything the operator
    sets (so the writer skips objects that are already as desired)."""
    obj: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": d.namespace,
            "labels": object_labels,
            "ownerReferences": [owner_reference(d)],
        },
        **body,
    }
    if annotations:  # hashed with the rest (absent, the hash is what it always was)
        obj["metadata"]["annotations"] = dict(annotations)
    obj["metadata"]["annotations"] = {**(annotations or {}), HASH_ANNOTATION: content_hash(obj)}
    return obj


def scorer_object(
    d: Detector,
    api_version: str,
    kind: str,
    name: str,
    body: dict[str, Any],
    track: str | None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A scorer child, labelled with its track (None: shared by every track)."""
    return owned(d, api_version, kind, name, body, labels(d, track), annotations)


# -- pod pieces --------------------------------------------------------------------------------

POD_SECURITY: Final = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: Final = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def pod_spec(
    d: Detector,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    grace_s: int = 30,
    affinity: dict[str, Any] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """Every pod the operator runs: no service-account token, no service links, the
    restricted security context, and ``spec.placement`` (node selector, tolerations,
    priority; its affinity's kinds replace ``affinity``'s)."""
    place = d.spec.placement
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_s,
        "securityContext": POD_SECURITY,
        **more,
        "containers": containers,
        "volumes": volumes,
    }
    merged = {**(affinity or {}), **(place.affinity or {})}
    if merged:
        spec["affinity"] = merged
    if place.node_selector:
        spec["nodeSelector"] = dict(place.node_selector)
    if place.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in place.tolerations
        ]
    if place.priority_class_name:
        spec["priorityClassName"] = place.priority_class_name
    return spec


def kafka_config(d: Detector, group_id: str, client_id: str) -> dict[str, Any]:
    """The Kafka part of a scorer's or sink's config, without the password (an env var)."""
    spec = d.spec
    auth, tls = spec.kafka.authentication, spec.kafka.tls
    kafka: dict[str, Any] = {
        "bootstrap_servers": spec.kafka.bootstrap_servers,
        "group_id": group_id,
        "client_id": client_id,
        "security_protocol": {
            (False, False): "PLAINTEXT",
            (False, True): "SSL",
            (True, False): "SASL_PLAINTEXT",
            (True, True): "SASL_SSL",
        }[(auth is not None, tls is not None)],
    }
    if auth is not None:
        kafka["sasl_mechanism"] = auth.type.upper()
        kafka["sasl_username"] = auth.username
    if tls is not None:
        cas = [f"{CA_DIR}/{ref.secret_name}-{ref.certificate}" for ref in tls.trusted_certificates]
        if len(cas) == 1:
            kafka["ssl_ca_location"] = cas[0]
        elif cas:
            kafka["ssl_ca_files"] = cas  # read into one bundle at start
        if tls.client_certificate is not None:
            kafka["ssl_certificate_location"] = f"{CLIENT_CERT_DIR}/{CLIENT_CERT_FILE}"
            kafka["ssl_key_location"] = f"{CLIENT_CERT_DIR}/{CLIENT_KEY_FILE}"
    if spec.kafka.extra:
        kafka["extra"] = dict(spec.kafka.extra)
    return kafka


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def kafka_env(d: Detector) -> list[dict[str, Any]]:
    """The Kafka password, from its Secret (never in a ConfigMap)."""
    auth = d.spec.kafka.authentication
    if auth is None:
        return []
    ref = auth.password_secret
    return [secret_env(PASSWORD_ENV, ref.secret_name, ref.password)]


def pod_volumes(
    d: Detector, config_map: str, tmp_size: str, extra: tuple[tuple[str, str, str], ...] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts of a scorer or sink pod: its config (read-only), ``extra`` emptyDirs
    as ``(name, size, mount path)`` (mounted read-only: an init container fills them), a
    writable ``/tmp`` (the root filesystem is read-only) and the brokers' CA certificates."""
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": config_map}}]
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    for name, size, path in extra:
        volumes.append({"name": name, "emptyDir": {"sizeLimit": size}})
        mounts.append({"name": name, "mountPath": path, "readOnly": True})
    volumes.append({"name": "tmp", "emptyDir": {"sizeLimit": tmp_size}})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})  # noqa: S108 - an emptyDir
    ca = _ca_volume(d)
    if ca is not None:
        volumes.append(ca)
        mounts.append({"name": "kafka-ca", "mountPath": CA_DIR, "readOnly": True})
    tls = d.spec.kafka.tls
    if tls is not None and (client := tls.client_certificate) is not None:
        items = [
            {"key": client.certificate, "path": CLIENT_CERT_FILE},
            {"key": client.key, "path": CLIENT_KEY_FILE},
        ]
        # 0440: the key readable by the pod's group (fsGroup) only, not by every user.
        secret = {"secretName": client.secret_name, "items": items, "defaultMode": 0o440}
        volumes.append({"name": "kafka-client", "secret": secret})
        mounts.append({"name": "kafka-client", "mountPath": CLIENT_CERT_DIR, "readOnly": True})
    return volumes, mounts


def _ca_volume(d: Detector) -> dict[str, Any] | None:
    """The brokers' CA certificates, projected from their Secrets."""
    tls = d.spec.kafka.tls
    if tls is None or not tls.trusted_certificates:
        return None  # no private CA: the system's public ones
    sources = [
        {
            "secret": {
                "name": ref.secret_name,
                "items": [{"key": ref.certificate, "path": f"{ref.secret_name}-{ref.certificate}"}],
            }
        }
        for ref in tls.trusted_certificates
    ]
    return {"name": "kafka-ca", "projected": {"sources": sources}}
