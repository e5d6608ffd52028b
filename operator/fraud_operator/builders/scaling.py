"""How a track scales and survives disruption: a CPU HorizontalPodAutoscaler or, with KEDA and
a lag threshold, a lag-based ScaledObject (with its TriggerAuthentication), and a
PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from fraud_operator.builders.names import (
    group_of,
    kafka_auth_name,
    labels,
    scorer_name,
    selector,
)
from fraud_operator.builders.objects import ApiVersions, Detector, owned, scorer_object


def uses_keda(d: Detector, api: ApiVersions) -> bool:
    return api.keda and d.spec.scaling.lag_threshold is not None


def cpu_autoscaler_spec(deployment: str, minimum: int, maximum: int, cpu: int) -> dict[str, Any]:
    """A HorizontalPodAutoscaler's spec scaling ``deployment`` on CPU (``autoscaling/v2`` or
    ``v2beta2``: same shape for resource metrics); the scorers' and the entity stage's."""
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicas": minimum,
        "maxReplicas": maximum,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": cpu},
                },
            }
        ],
    }


def horizontal_pod_autoscaler(
    d: Detector, api: ApiVersions, track: str = "stable"
) -> dict[str, Any]:
    """CPU-based scaling of one scorer track."""
    s, name = d.spec.scaling, scorer_name(d, track)
    spec = cpu_autoscaler_spec(name, s.min_replicas, s.max_replicas, s.target_cpu_utilization)
    return scorer_object(d, api.autoscaling, "HorizontalPodAutoscaler", name, {"spec": spec}, track)


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
        trigger["authenticationRef"] = {"name": kafka_auth_name(d)}
    return scorer_object(
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
    return scorer_object(
        d,
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        kafka_auth_name(d),
        {"spec": {"secretTargetRef": params}},
        None,
    )


def pod_disruption_budget(d: Detector, api: ApiVersions, track: str = "stable") -> dict[str, Any]:
    """At most one scorer down at a time during voluntary disruptions (node drains): a
    rebalance per pod, not all partitions at once."""
    return one_at_a_time(d, api, scorer_name(d, track), selector(d, track), labels(d, track))


def one_at_a_time(
    d: Detector,
    api: ApiVersions,
    name: str,
    select: dict[str, str],
    object_labels: dict[str, str],
) -> dict[str, Any]:
    """A disruption budget letting one of the ``select``ed pods go at a time."""
    body = {"spec": {"maxUnavailable": 1, "selector": {"matchLabels": select}}}
    return owned(d, api.policy, "PodDisruptionBudget", name, body, object_labels)
