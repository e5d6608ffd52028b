"""The sinks' workloads: one Deployment and ConfigMap per declared sink (webhook, case store),
with the URL, DSN and Kafka password only as environment variables from their Secrets."""

from __future__ import annotations

from typing import Any, Final

import yaml

from fraud_operator.builders.monitoring import (
    SINK_METRICS_PORT,
    sink_service,
    sink_service_monitor,
)
from fraud_operator.builders.names import (
    sink_config_name,
    sink_group,
    sink_labels,
    sink_name,
    sink_selector,
)
from fraud_operator.builders.networking import sink_network_policy
from fraud_operator.builders.objects import (
    CONFIG_DIR,
    CONTAINER_SECURITY,
    RESTART_ANNOTATION,
    ApiVersions,
    Detector,
    content_hash,
    kafka_config,
    kafka_env,
    owned,
    pod_spec,
    pod_volumes,
    secret_env,
)

SINK_KINDS: Final = ("webhook", "postgres")
SINK_CONFIG_FILE: Final = "sink.yaml"
WEBHOOK_URL_ENV: Final = "FRAUD_WEBHOOK__URL"
POSTGRES_DSN_ENV: Final = "FRAUD_POSTGRES__DSN"
POSTGRES_MIGRATION_DSN_ENV: Final = "FRAUD_POSTGRES__MIGRATION_DSN"


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
        "kafka": kafka_config(d, sink_group(d, kind), sink_name(d, kind)),
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
    return owned(
        d,
        "v1",
        "ConfigMap",
        sink_config_name(d, kind),
        {"data": {SINK_CONFIG_FILE: text}},
        sink_labels(d, kind),
    )


def sink_deployment(d: Detector, kind: str) -> dict[str, Any]:
    """One sink pod. ``Recreate``: two webhook senders never overlap (each remembers what it
    posted), and a case-store sink is idempotent anyway."""
    sinks = d.spec.sinks
    assert sinks is not None
    env = kafka_env(d)
    if kind == "webhook" and sinks.webhook is not None:
        ref = sinks.webhook.url_secret
        env.append(secret_env(WEBHOOK_URL_ENV, ref.secret_name, ref.key))
    if kind == "postgres" and sinks.postgres is not None:
        ref = sinks.postgres.dsn_secret
        env.append(secret_env(POSTGRES_DSN_ENV, ref.secret_name, ref.key))
        if (owner := sinks.postgres.migration_dsn_secret) is not None:
            env.append(secret_env(POSTGRES_MIGRATION_DSN_ENV, owner.secret_name, owner.key))
    volumes, mounts = pod_volumes(d, sink_config_name(d, kind), "16Mi")
    probe = {"port": SINK_METRICS_PORT}
    container = {
        "name": "sink",
        "image": d.sink_image,
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
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    config_hash = content_hash(sink_config(d, kind))
    return owned(
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
                    "spec": pod_spec(d, [container], volumes, grace_s=60),
                },
            }
        },
        sink_labels(d, kind),
    )


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
