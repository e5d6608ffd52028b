"""The entity stage's workload (docs/features.md): deployed only when the detector's features
aggregate per another entity than the user, or from analysts' labels.

One Deployment (``python -m fraud_scorer.entity_stage``, the scorer's image), its ConfigMap, a
CPU autoscaler bounded by ``entityStage.maxReplicas`` (the by-entity topic's partitions are the
real bound: more members than partitions idle), a disruption budget, and a NetworkPolicy like the
scorers': ingress to the metrics port, egress to DNS and Kafka only.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from fraud_operator.builders.names import (
    STAGE_APP,
    by_entity_topic,
    entity_table_topic,
    pods_of,
    stage_config_name,
    stage_group,
    stage_labels,
    stage_name,
)
from fraud_operator.builders.networking import kafka_ports
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
    staged_features,
)
from fraud_operator.builders.scaling import cpu_autoscaler_spec, one_at_a_time

STAGE_METRICS_PORT: Final = 9104
STAGE_CONFIG_FILE: Final = "entity-stage.yaml"


def stage_config(d: Detector) -> dict[str, Any]:
    """The stage's config file (``fraud_scorer.entity_stage.EntityStageSettings``), without
    the Kafka password (an environment variable from its Secret)."""
    spec = d.spec
    return {
        "detector": d.name,
        "kafka": kafka_config(d, stage_group(d), stage_name(d)),
        "topics": {
            "input": spec.topics.input,
            "labels": spec.topics.labels,
            "by_entity": by_entity_topic(d),
            "entity_features": entity_table_topic(d),
        },
        "features": spec.features,
        "metrics": {"host": "0.0.0.0", "port": STAGE_METRICS_PORT},  # noqa: S104 - in-cluster
    }


def stage_config_map(d: Detector) -> dict[str, Any]:
    text = yaml.safe_dump(stage_config(d), sort_keys=False)
    return owned(
        d,
        "v1",
        "ConfigMap",
        stage_config_name(d),
        {"data": {STAGE_CONFIG_FILE: text}},
        stage_labels(d),
    )


def stage_deployment(d: Detector) -> dict[str, Any]:
    """The stage's pods. ``replicas`` is left to the autoscaler. A pod that starts rebuilds
    its partitions' state by replay (its startup probe allows for it)."""
    spec = d.spec
    volumes, mounts = pod_volumes(d, stage_config_name(d), "64Mi")
    probe = {"port": STAGE_METRICS_PORT}
    container = {
        "name": "entity-stage",
        "image": d.scorer_image,
        "imagePullPolicy": spec.scorer.image_pull_policy,
        "command": ["python", "-m", "fraud_scorer.entity_stage"],
        "args": ["--config", f"{CONFIG_DIR}/{STAGE_CONFIG_FILE}"],
        "env": kafka_env(d),
        "ports": [{"name": "metrics", "containerPort": STAGE_METRICS_PORT, "protocol": "TCP"}],
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
        "resources": spec.entity_stage.resources.model_dump(exclude_none=True),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    selector = pods_of(d, STAGE_APP)
    return owned(
        d,
        "apps/v1",
        "Deployment",
        stage_name(d),
        {
            "spec": {
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "template": {
                    "metadata": {
                        "labels": stage_labels(d),
                        "annotations": {
                            RESTART_ANNOTATION: content_hash(stage_config(d)),
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(STAGE_METRICS_PORT),
                        },
                    },
                    "spec": pod_spec(d, [container], volumes),
                },
            }
        },
        stage_labels(d),
    )


def stage_autoscaler(d: Detector, api: ApiVersions) -> dict[str, Any]:
    s = d.spec.entity_stage
    spec = cpu_autoscaler_spec(
        stage_name(d), s.min_replicas, s.max_replicas, s.target_cpu_utilization
    )
    return owned(
        d, api.autoscaling, "HorizontalPodAutoscaler", stage_name(d), {"spec": spec},
        stage_labels(d),
    )  # fmt: skip


def stage_disruption_budget(d: Detector, api: ApiVersions) -> dict[str, Any]:
    """One stage pod down at a time: each leaves a rebuild behind it."""
    return one_at_a_time(d, api, stage_name(d), pods_of(d, STAGE_APP), stage_labels(d))


def stage_network_policy(d: Detector) -> dict[str, Any]:
    ports = sorted(set(kafka_ports(d)) | set(d.spec.network_policy.extra_egress_ports))
    dns = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    return owned(
        d,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        stage_name(d),
        {
            "spec": {
                "podSelector": {"matchLabels": pods_of(d, STAGE_APP)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"ports": [{"port": STAGE_METRICS_PORT, "protocol": "TCP"}]}],
                "egress": [
                    {"ports": dns},
                    {"ports": [{"port": p, "protocol": "TCP"} for p in ports]},
                ],
            }
        },
        stage_labels(d),
    )


def stage_children(d: Detector, api: ApiVersions) -> list[dict[str, Any]]:
    """The stage's objects, or none when the features need no stage (a pass then prunes
    what an earlier spec had)."""
    if staged_features(d) is None:
        return []
    out = [
        stage_config_map(d),
        stage_deployment(d),
        stage_disruption_budget(d, api),
        stage_autoscaler(d, api),
    ]
    if d.spec.network_policy.enabled:
        out.append(stage_network_policy(d))
    return out
