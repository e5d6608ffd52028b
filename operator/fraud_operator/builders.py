"""Desired state: pure functions from a FraudDetector to the objects that run it.

Nothing here talks to Kubernetes. Every builder returns a plain manifest with deterministic
names, the labels from :func:`labels`, a controller owner reference (so garbage collection
deletes children with their FraudDetector) and a content hash annotation (so the writer can
skip objects that are already as desired).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlparse

import yaml

from fraud_operator.spec import GROUP, KIND, VERSION, FraudDetectorSpec, ModelRef

MANAGER: Final = "fraud-operator"
HASH_ANNOTATION: Final = f"{GROUP}/spec-hash"
RESTART_ANNOTATION: Final = f"{GROUP}/restart-hash"
METRICS_PORT: Final = 9102
CONFIG_FILE: Final = "scorer.yaml"
CONFIG_DIR: Final = "/etc/fraud"
MODEL_DIR: Final = "/models/current"
CA_DIR: Final = "/etc/fraud/kafka-ca"
PASSWORD_ENV: Final = "FRAUD_KAFKA__SASL_PASSWORD"  # noqa: S105 - a variable name
RUN_AS: Final = 10001


@dataclass(frozen=True)
class Detector:
    """What builders need to know about one FraudDetector."""

    name: str
    namespace: str
    uid: str
    spec: FraudDetectorSpec

    @property
    def consumer_group(self) -> str:
        return self.spec.consumer_group or f"fraud-scorer-{self.namespace}-{self.name}"


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
    """One running track: its model and the slice of users it decides for.

    stable decides for ``[start, end)`` = ``[weight, 100)`` during a canary, canary for
    ``[0, weight)``, shadow for everyone but writes only to the shadow decisions topic.
    Only stable dead-letters and only stable and canary alert: one of each per message.
    """

    track: str = "stable"
    model: ModelRef | None = None  # None: the spec's model
    start: int = 0
    end: int = 100

    def model_of(self, d: Detector) -> ModelRef:
        return self.model or d.spec.model


STABLE = TrackPlan()


def scorer_name(d: Detector, track: str = "stable") -> str:
    return f"{d.name}-scorer" if track == "stable" else f"{d.name}-scorer-{track}"


def config_name(d: Detector, track: str = "stable") -> str:
    return f"{scorer_name(d, track)}-config"


def labels(d: Detector, track: str | None = "stable") -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "fraud-scorer",
        "app.kubernetes.io/instance": d.name,
        "app.kubernetes.io/component": "scorer",
        "app.kubernetes.io/part-of": "fraud-detector",
        "app.kubernetes.io/managed-by": MANAGER,
    }
    if track is not None:
        out[f"{GROUP}/track"] = track
    return out


def selector(d: Detector, track: str = "stable") -> dict[str, str]:
    """The immutable part of the labels: a Deployment's selector can never change."""
    return {
        "app.kubernetes.io/name": "fraud-scorer",
        "app.kubernetes.io/instance": d.name,
        f"{GROUP}/track": track,
    }


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


def _object(
    d: Detector,
    api_version: str,
    kind: str,
    name: str,
    body: dict[str, Any],
    track: str | None,
    object_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Wrap ``body`` with metadata; the hash covers everything the operator sets."""
    obj: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": d.namespace,
            "labels": object_labels or labels(d, track),
            "ownerReferences": [owner_reference(d)],
        },
        **body,
    }
    obj["metadata"]["annotations"] = {HASH_ANNOTATION: content_hash(obj)}
    return obj


def _kafka_config(d: Detector, group_id: str, client_id: str) -> dict[str, Any]:
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
        first = tls.trusted_certificates[0]
        kafka["ssl_ca_location"] = (
            f"{CA_DIR}/{first.secret_name}-{first.certificate}"
            if len(tls.trusted_certificates) == 1
            else CA_DIR
        )
    return kafka


def scorer_config(d: Detector, plan: TrackPlan = STABLE) -> dict[str, Any]:
    """The scorer's config file (``fraud_scorer.config.ScorerSettings``), minus the password,
    which reaches the pod only as an environment variable from its Secret."""
    spec, track = d.spec, plan.track
    kafka = _kafka_config(d, group_of(d, track), f"{d.name}-{track}")
    return {
        "detector": d.name,
        "track": track,
        "kafka": kafka,
        "topics": {
            "input": spec.topics.input,
            "decisions": shadow_topic(d) if track == "shadow" else spec.topics.decisions,
            "alerts": spec.topics.alerts,
            "dead_letter": spec.topics.dead_letter,
        },
        "model": {"path": MODEL_DIR},
        "rules": [r.model_dump() for r in spec.rules],
        "decision": spec.decision.model_dump(),
        "slice": {"start": plan.start, "end": plan.end},
        "output": {"alerts": track != "shadow", "dead_letters": track == "stable"},
        "metrics": {"host": "0.0.0.0", "port": METRICS_PORT},  # noqa: S104 - scraped in-cluster
    }


def group_of(d: Detector, track: str) -> str:
    """Each track is its own consumer group: every track sees every message."""
    return d.consumer_group if track == "stable" else f"{d.consumer_group}-{track}"


def shadow_topic(d: Detector) -> str:
    """Where the shadow track writes its decisions (never to alerts)."""
    return f"{d.spec.topics.decisions}-shadow"


def config_map(d: Detector, plan: TrackPlan = STABLE) -> dict[str, Any]:
    text = yaml.safe_dump(scorer_config(d, plan), sort_keys=False)
    return _object(
        d, "v1", "ConfigMap", config_name(d, plan.track), {"data": {CONFIG_FILE: text}}, plan.track
    )


def _restart_hash(d: Detector, plan: TrackPlan) -> str:
    """Changes that need new pods. Rules, thresholds and the user slice are hot-reloaded from
    the mounted file by the running scorer, so they are left out: editing a rule or moving a
    canary step restarts nothing."""
    config = scorer_config(d, plan)
    for key in ("rules", "decision", "slice"):
        config.pop(key)
    return content_hash({"config": config, "model": plan.model_of(d).model_dump()})


def _volumes(d: Detector, track: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_name(d, track)}},
        {"name": "model", "emptyDir": {"sizeLimit": "512Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "model", "mountPath": "/models", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp
    ]
    ca = _ca_volume(d)
    if ca is not None:
        volumes.append(ca)
        mounts.append({"name": "kafka-ca", "mountPath": CA_DIR, "readOnly": True})
    return volumes, mounts


def _ca_volume(d: Detector) -> dict[str, Any] | None:
    """The brokers' CA certificates, projected from their Secrets."""
    tls = d.spec.kafka.tls
    if tls is None:
        return None
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


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _kafka_env(d: Detector) -> list[dict[str, Any]]:
    auth = d.spec.kafka.authentication
    if auth is None:
        return []
    ref = auth.password_secret
    return [_secret_env(PASSWORD_ENV, ref.secret_name, ref.password)]


_POD_SECURITY: Final = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_SECURE: Final = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def deployment(d: Detector, plan: TrackPlan = STABLE) -> dict[str, Any]:
    """The scorer for one track. ``replicas`` is not set: the autoscaler owns it (setting it
    here would fight the HPA on every pass). Pods are spread across nodes and zones."""
    spec, track, model = d.spec, plan.track, plan.model_of(d)
    volumes, mounts = _volumes(d, track)
    env = _kafka_env(d)
    resources = spec.scorer.resources.model_dump(exclude_none=True)
    probe = {"port": METRICS_PORT}
    container = {
        "name": "scorer",
        "image": spec.scorer.image,
        "imagePullPolicy": spec.scorer.image_pull_policy,
        "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "resources": resources,
        "securityContext": _SECURE,
        "volumeMounts": mounts,
    }
    fetch = {
        "name": "fetch-model",
        "image": spec.scorer.image,
        "imagePullPolicy": spec.scorer.image_pull_policy,
        "command": ["python", "-m", "fraud_scorer.fetch"],
        "args": ["--uri", model.uri, "--sha256", model.sha256, "--dest", MODEL_DIR],
        "resources": resources,
        "securityContext": _SECURE,
        "volumeMounts": [{"name": "model", "mountPath": "/models"}, mounts[2]],
    }
    pod_labels = labels(d, track)
    return _object(
        d,
        "apps/v1",
        "Deployment",
        scorer_name(d, track),
        {
            "spec": {
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": selector(d, track)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {
                            RESTART_ANNOTATION: _restart_hash(d, plan),
                            f"{GROUP}/model-version": model.version,
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(METRICS_PORT),
                        },
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": _POD_SECURITY,
                        "initContainers": [fetch],
                        "containers": [container],
                        "volumes": volumes,
                        "affinity": {
                            "podAntiAffinity": {
                                "preferredDuringSchedulingIgnoredDuringExecution": [
                                    {
                                        "weight": 100,
                                        "podAffinityTerm": {
                                            "topologyKey": "kubernetes.io/hostname",
                                            "labelSelector": {"matchLabels": selector(d, track)},
                                        },
                                    }
                                ]
                            }
                        },
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": {"matchLabels": selector(d, track)},
                            }
                        ],
                    },
                },
            }
        },
        track,
    )


def _metrics_service(
    d: Detector, name: str, select: dict[str, str], port: int, object_labels: dict[str, str]
) -> dict[str, Any]:
    ports = [
        {
            "name": "metrics",
            "port": port,
            "targetPort": "metrics",
            "protocol": "TCP",  # server-side apply needs the list key in full
        }
    ]
    body = {"spec": {"selector": select, "ports": ports}}
    return _object(d, "v1", "Service", name, body, None, object_labels)


def _service_monitor(d: Detector, name: str, object_labels: dict[str, str]) -> dict[str, Any]:
    endpoints = [{"port": "metrics", "interval": "15s", "path": "/metrics"}]
    body = {"spec": {"selector": {"matchLabels": object_labels}, "endpoints": endpoints}}
    return _object(d, "monitoring.coreos.com/v1", "ServiceMonitor", name, body, None, object_labels)


def service(d: Detector) -> dict[str, Any]:
    """Metrics endpoint of every track (tracks are told apart by the track label)."""
    select = {"app.kubernetes.io/name": "fraud-scorer", "app.kubernetes.io/instance": d.name}
    return _metrics_service(d, f"{d.name}-scorer-metrics", select, METRICS_PORT, labels(d, None))


def horizontal_pod_autoscaler(
    d: Detector, api: ApiVersions, track: str = "stable"
) -> dict[str, Any]:
    """CPU-based scaling (``autoscaling/v2`` or ``v2beta2``: same shape for resource metrics)."""
    s = d.spec.scaling
    return _object(
        d,
        api.autoscaling,
        "HorizontalPodAutoscaler",
        scorer_name(d, track),
        {
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": scorer_name(d, track),
                },
                "minReplicas": s.min_replicas,
                "maxReplicas": s.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": s.target_cpu_utilization,
                            },
                        },
                    }
                ],
            }
        },
        track,
    )


def scaled_object(d: Detector, track: str = "stable") -> dict[str, Any]:
    """KEDA scaling on consumer lag (its Kafka scaler reads the group's lag)."""
    s, kafka = d.spec.scaling, d.spec.kafka
    metadata: dict[str, Any] = {
        "bootstrapServers": kafka.bootstrap_servers,
        "consumerGroup": group_of(d, track),
        "topic": d.spec.topics.input,
        "lagThreshold": str(s.lag_threshold),
        "offsetResetPolicy": "earliest",
    }
    trigger: dict[str, Any] = {"type": "kafka", "metadata": metadata}
    if kafka.authentication is not None:
        trigger["authenticationRef"] = {"name": f"{d.name}-kafka"}
    return _object(
        d,
        "keda.sh/v1alpha1",
        "ScaledObject",
        scorer_name(d, track),
        {
            "spec": {
                "scaleTargetRef": {"name": scorer_name(d, track)},
                "minReplicaCount": s.min_replicas,
                "maxReplicaCount": s.max_replicas,
                "triggers": [trigger],
            }
        },
        track,
    )


def trigger_authentication(d: Detector) -> dict[str, Any] | None:
    """KEDA's credentials for the lag query, from the same Secret as the scorer's."""
    auth = d.spec.kafka.authentication
    if auth is None:
        return None
    secret = auth.password_secret.secret_name
    params = [
        {"parameter": "password", "name": secret, "key": auth.password_secret.password},
    ]
    return _object(
        d,
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        f"{d.name}-kafka",
        {"spec": {"secretTargetRef": params}},
        None,
    )


def pod_disruption_budget(d: Detector, api: ApiVersions, track: str = "stable") -> dict[str, Any]:
    """At most one scorer down at a time during voluntary disruptions (node drains): a
    rebalance per pod, not all partitions at once."""
    return _object(
        d,
        api.policy,
        "PodDisruptionBudget",
        scorer_name(d, track),
        {"spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(d, track)}}},
        track,
    )


def service_monitor(d: Detector) -> dict[str, Any]:
    return _service_monitor(d, f"{d.name}-scorer", labels(d, None))


# -- sinks -------------------------------------------------------------------------------------

SINK_KINDS: Final = ("webhook", "postgres")
SINK_METRICS_PORT: Final = 9103
SINK_CONFIG_FILE: Final = "sink.yaml"
WEBHOOK_URL_ENV: Final = "FRAUD_WEBHOOK__URL"
POSTGRES_DSN_ENV: Final = "FRAUD_POSTGRES__DSN"


def sink_name(d: Detector, kind: str) -> str:
    return f"{d.name}-sink-{kind}"


def sink_labels(d: Detector, kind: str | None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "fraud-sink",
        "app.kubernetes.io/instance": d.name,
        "app.kubernetes.io/component": "sink",
        "app.kubernetes.io/part-of": "fraud-detector",
        "app.kubernetes.io/managed-by": MANAGER,
    }
    if kind is not None:
        out[f"{GROUP}/sink"] = kind
    return out


def sink_selector(d: Detector, kind: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "fraud-sink",
        "app.kubernetes.io/instance": d.name,
        f"{GROUP}/sink": kind,
    }


def declared_sinks(d: Detector) -> list[str]:
    sinks = d.spec.sinks
    if sinks is None:
        return []
    return [k for k in SINK_KINDS if getattr(sinks, k) is not None]


def sink_config(d: Detector, kind: str) -> dict[str, Any]:
    """The sink's config file (``fraud_sinks.config.SinkSettings``); the URL, DSN and
    Kafka password reach the pod only as environment variables from their Secrets."""
    spec, sinks = d.spec, d.spec.sinks
    assert sinks is not None
    config: dict[str, Any] = {
        "detector": d.name,
        "sink": kind,
        "kafka": _kafka_config(d, f"{d.consumer_group}-sink-{kind}", sink_name(d, kind)),
        "topics": {
            "decisions": spec.topics.decisions,
            "alerts": spec.topics.alerts,
            "labels": spec.topics.labels,
            "dead_letter": spec.topics.dead_letter,
        },
        "metrics": {"host": "0.0.0.0", "port": SINK_METRICS_PORT},  # noqa: S104 - in-cluster
    }
    if kind == "webhook" and sinks.webhook is not None:
        w = sinks.webhook
        config["webhook"] = {
            "style": w.style,
            "min_action": w.min_action,
            "rate_per_s": w.rate_per_second,
        }
    return config


def sink_config_map(d: Detector, kind: str) -> dict[str, Any]:
    text = yaml.safe_dump(sink_config(d, kind), sort_keys=False)
    return _object(
        d,
        "v1",
        "ConfigMap",
        f"{sink_name(d, kind)}-config",
        {"data": {SINK_CONFIG_FILE: text}},
        None,
        sink_labels(d, kind),
    )


def sink_deployment(d: Detector, kind: str) -> dict[str, Any]:
    """One sink pod. ``Recreate``: two webhook senders never overlap (each remembers what it
    posted), and a case-store sink is idempotent anyway."""
    sinks = d.spec.sinks
    assert sinks is not None
    env = _kafka_env(d)
    if kind == "webhook" and sinks.webhook is not None:
        ref = sinks.webhook.url_secret
        env.append(_secret_env(WEBHOOK_URL_ENV, ref.secret_name, ref.key))
    if kind == "postgres" and sinks.postgres is not None:
        ref = sinks.postgres.dsn_secret
        env.append(_secret_env(POSTGRES_DSN_ENV, ref.secret_name, ref.key))
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{sink_name(d, kind)}-config"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
    ]
    ca = _ca_volume(d)
    if ca is not None:
        volumes.append(ca)
        mounts.append({"name": "kafka-ca", "mountPath": CA_DIR, "readOnly": True})
    probe = {"port": SINK_METRICS_PORT}
    container = {
        "name": "sink",
        "image": sinks.image or d.spec.scorer.image,
        "imagePullPolicy": d.spec.scorer.image_pull_policy,
        "command": ["fraud-sink"],
        "args": ["--config", f"{CONFIG_DIR}/{SINK_CONFIG_FILE}"],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": SINK_METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": sinks.resources.model_dump(exclude_none=True),
        "securityContext": _SECURE,
        "volumeMounts": mounts,
    }
    config_hash = content_hash(sink_config(d, kind))
    return _object(
        d,
        "apps/v1",
        "Deployment",
        sink_name(d, kind),
        {
            "spec": {
                "replicas": 1,
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": sink_selector(d, kind)},
                "strategy": {"type": "Recreate"},
                "template": {
                    "metadata": {
                        "labels": sink_labels(d, kind),
                        "annotations": {
                            RESTART_ANNOTATION: config_hash,
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(SINK_METRICS_PORT),
                        },
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "terminationGracePeriodSeconds": 60,
                        "securityContext": _POD_SECURITY,
                        "containers": [container],
                        "volumes": volumes,
                    },
                },
            }
        },
        None,
        sink_labels(d, kind),
    )


def sink_service(d: Detector) -> dict[str, Any]:
    """Metrics endpoint of every sink (told apart by the sink label)."""
    return _metrics_service(
        d, f"{d.name}-sink-metrics", sink_selector_all(d), SINK_METRICS_PORT, sink_labels(d, None)
    )


def sink_service_monitor(d: Detector) -> dict[str, Any]:
    return _service_monitor(d, f"{d.name}-sinks", sink_labels(d, None))


def sink_children(d: Detector, api: ApiVersions) -> list[dict[str, Any]]:
    kinds = declared_sinks(d)
    if not kinds:
        return []
    out: list[dict[str, Any]] = []
    for kind in kinds:
        out += [sink_config_map(d, kind), sink_deployment(d, kind)]
    out.append(sink_service(d))
    if d.spec.network_policy.enabled:
        out.append(sink_network_policy(d))
    if api.service_monitor:
        out.append(sink_service_monitor(d))
    return out


# -- network policy ----------------------------------------------------------------------------


def kafka_ports(d: Detector) -> list[int]:
    """The ports in ``bootstrapServers`` (``host:port,host:port``; 9092 when none is given)."""
    ports = set()
    for server in d.spec.kafka.bootstrap_servers.split(","):
        host_port = server.strip().rsplit("/", 1)[-1]
        _, sep, port = host_port.rpartition(":")
        ports.add(int(port) if sep and port.isdigit() else 9092)
    return sorted(ports)


def _url_port(uri: str) -> int | None:
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return None  # file:// or a mounted path: no network
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def network_policy(d: Detector, models: tuple[ModelRef, ...] = ()) -> dict[str, Any]:
    """Scorer pods (every track, the preflight Jobs too) take traffic only on the metrics
    port and reach only DNS, Kafka and the model server."""
    egress_ports = set(kafka_ports(d)) | set(d.spec.network_policy.extra_egress_ports)
    for model in (d.spec.model, *models):
        port = _url_port(model.uri)
        if port is not None:
            egress_ports.add(port)
    dns = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    return _object(
        d,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        f"{d.name}-scorer",
        {
            "spec": {
                "podSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "fraud-scorer",
                        "app.kubernetes.io/instance": d.name,
                    }
                },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"ports": [{"port": METRICS_PORT, "protocol": "TCP"}]}],
                "egress": [
                    {"ports": dns},
                    {"ports": [{"port": p, "protocol": "TCP"} for p in sorted(egress_ports)]},
                ],
            }
        },
        None,
    )


def sink_network_policy(d: Detector) -> dict[str, Any]:
    """Sink pods take traffic only on their metrics port. Their egress is left open: the
    webhook and database addresses live in Secrets the operator does not parse."""
    return _object(
        d,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        f"{d.name}-sinks",
        {
            "spec": {
                "podSelector": {"matchLabels": sink_selector_all(d)},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": SINK_METRICS_PORT, "protocol": "TCP"}]}],
            }
        },
        None,
        sink_labels(d, None),
    )


def sink_selector_all(d: Detector) -> dict[str, str]:
    return {"app.kubernetes.io/name": "fraud-sink", "app.kubernetes.io/instance": d.name}


def uses_keda(d: Detector, api: ApiVersions) -> bool:
    return api.keda and d.spec.scaling.lag_threshold is not None


def track_children(d: Detector, api: ApiVersions, plan: TrackPlan) -> list[dict[str, Any]]:
    """One track's objects: config, Deployment, disruption budget, autoscaler."""
    out = [config_map(d, plan), deployment(d, plan), pod_disruption_budget(d, api, plan.track)]
    if uses_keda(d, api):
        out.append(scaled_object(d, plan.track))
    else:
        out.append(horizontal_pod_autoscaler(d, api, plan.track))
    return out


def children(
    d: Detector, api: ApiVersions, plans: tuple[TrackPlan, ...] = (STABLE,)
) -> list[dict[str, Any]]:
    """Everything one FraudDetector runs on, in the order to apply it."""
    out: list[dict[str, Any]] = []
    for plan in plans:
        out += track_children(d, api, plan)
    out.append(service(d))
    if d.spec.network_policy.enabled:
        out.append(network_policy(d, tuple(p.model for p in plans if p.model is not None)))
    if uses_keda(d, api):
        auth = trigger_authentication(d)
        out += [auth] if auth else []
    if api.service_monitor:
        out.append(service_monitor(d))
    return out + sink_children(d, api)


def preflight_name(d: Detector, model: ModelRef) -> str:
    return f"{d.name}-preflight-{model.sha256[:10]}"


def preflight_job(d: Detector, model: ModelRef) -> dict[str, Any]:
    """A one-off Job that fetches the candidate model and loads it exactly as a scorer would
    (hash, feature set, warm-up) before it gets any traffic. One Job per model hash."""
    resources = d.spec.scorer.resources.model_dump(exclude_none=True)
    return _object(
        d,
        "batch/v1",
        "Job",
        preflight_name(d, model),
        {
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": 600,
                "template": {
                    "metadata": {"labels": labels(d, "preflight")},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "preflight",
                                "image": d.spec.scorer.image,
                                "imagePullPolicy": d.spec.scorer.image_pull_policy,
                                "command": ["python", "-m", "fraud_scorer.preflight"],
                                "args": ["--uri", model.uri, "--sha256", model.sha256],
                                "resources": resources,
                                "securityContext": _SECURE,
                                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
                            }
                        ],
                        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                    },
                },
            }
        },
        "preflight",
    )
