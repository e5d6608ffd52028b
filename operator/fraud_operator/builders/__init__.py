"""Desired state: pure functions from a FraudDetector to the objects that run it.

Nothing here talks to Kubernetes. Every builder returns a plain manifest with a deterministic
name and labels (:mod:`.names`), a controller owner reference (garbage collection deletes
children with their FraudDetector) and a content hash annotation (the writer skips objects that
are already as desired) (:mod:`.objects`). By concept:

- :mod:`.scorer`: a track's config file, ConfigMap and Deployment;
- :mod:`.scaling`: autoscaler (HPA or KEDA) and disruption budget;
- :mod:`.monitoring`: metrics Services and ServiceMonitors;
- :mod:`.sinks`: the sinks' Deployments and ConfigMaps;
- :mod:`.entity_stage`: the entity stage's workload, when the features need it;
- :mod:`.console`: the analyst console, when the spec asks for it;
- :mod:`.networking`: NetworkPolicies;
- :mod:`.preflight`: the candidate model's preflight Job.

:func:`children` is everything one FraudDetector runs on; :func:`prunable_kinds` is what the
operator may delete of it when the plan no longer wants it.
"""

from __future__ import annotations

from typing import Any

from fraud_operator.builders.console import (
    CONSOLE_CONFIG_FILE,
    CONSOLE_METRICS_PORT,
    CONSOLE_PORT,
    console_children,
    console_config,
    console_deployment,
    console_network_policy,
)
from fraud_operator.builders.entity_stage import (
    STAGE_CONFIG_FILE,
    STAGE_METRICS_PORT,
    stage_children,
    stage_config,
    stage_deployment,
)
from fraud_operator.builders.monitoring import (
    SINK_METRICS_PORT,
    service,
    service_monitor,
    sink_service,
    sink_service_monitor,
)
from fraud_operator.builders.names import (
    MANAGER,
    config_name,
    group_of,
    labels,
    owned_by,
    preflight_name,
    scorer_name,
    selector,
    shadow_topic,
    sink_labels,
    sink_name,
    sink_selector,
    stage_name,
)
from fraud_operator.builders.networking import kafka_ports, network_policy, sink_network_policy
from fraud_operator.builders.objects import (
    CONFIG_DIR,
    HASH_ANNOTATION,
    MODEL_ANNOTATION,
    PASSWORD_ENV,
    RESTART_ANNOTATION,
    STABLE,
    USERS_ANNOTATION,
    ApiVersions,
    Detector,
    TrackPlan,
    content_hash,
    owner_reference,
    staged_features,
)
from fraud_operator.builders.preflight import preflight_job
from fraud_operator.builders.scaling import (
    horizontal_pod_autoscaler,
    pod_disruption_budget,
    scaled_object,
    trigger_authentication,
    uses_keda,
)
from fraud_operator.builders.scorer import (
    CONFIG_FILE,
    METRICS_PORT,
    MODEL_DIR,
    RunningTrack,
    config_map,
    deployment,
    running_rulebook,
    running_track,
    scorer_config,
)
from fraud_operator.builders.sinks import (
    POSTGRES_DSN_ENV,
    SINK_CONFIG_FILE,
    SINK_KINDS,
    WEBHOOK_URL_ENV,
    declared_sinks,
    sink_children,
    sink_config,
    sink_config_map,
    sink_deployment,
)

__all__ = [
    "CONFIG_DIR",
    "CONFIG_FILE",
    "CONSOLE_CONFIG_FILE",
    "CONSOLE_METRICS_PORT",
    "CONSOLE_PORT",
    "HASH_ANNOTATION",
    "MANAGER",
    "METRICS_PORT",
    "MODEL_ANNOTATION",
    "MODEL_DIR",
    "PASSWORD_ENV",
    "POSTGRES_DSN_ENV",
    "RESTART_ANNOTATION",
    "SINK_CONFIG_FILE",
    "SINK_KINDS",
    "SINK_METRICS_PORT",
    "STABLE",
    "STAGE_CONFIG_FILE",
    "STAGE_METRICS_PORT",
    "USERS_ANNOTATION",
    "WEBHOOK_URL_ENV",
    "ApiVersions",
    "Detector",
    "RunningTrack",
    "TrackPlan",
    "children",
    "config_map",
    "config_name",
    "console_children",
    "console_config",
    "console_deployment",
    "console_network_policy",
    "content_hash",
    "declared_sinks",
    "deployment",
    "group_of",
    "horizontal_pod_autoscaler",
    "kafka_ports",
    "labels",
    "network_policy",
    "owned_by",
    "owner_reference",
    "pod_disruption_budget",
    "preflight_job",
    "preflight_name",
    "prunable_kinds",
    "running_rulebook",
    "running_track",
    "scaled_object",
    "scorer_config",
    "scorer_name",
    "selector",
    "service",
    "service_monitor",
    "shadow_topic",
    "sink_children",
    "sink_config",
    "sink_config_map",
    "sink_deployment",
    "sink_labels",
    "sink_name",
    "sink_network_policy",
    "sink_selector",
    "sink_service",
    "sink_service_monitor",
    "stage_children",
    "stage_config",
    "stage_deployment",
    "stage_name",
    "staged_features",
    "track_children",
    "trigger_authentication",
    "uses_keda",
    "watched_kinds",
]


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
    return out + stage_children(d, api) + sink_children(d, api) + console_children(d, api)


def prunable_kinds(api: ApiVersions) -> list[tuple[str, str]]:
    """``(apiVersion, kind)`` of the children a pass deletes when :func:`children` no longer
    lists them: a finished canary or shadow track, a sink taken out of the spec, policies
    switched off, the autoscaler kind the spec no longer uses (HPA <-> KEDA). Services and
    ServiceMonitors stay until the FraudDetector goes (deleting them is a right the operator
    does not hold); preflight Jobs are kept as the record of a model's check."""
    kinds = [
        ("apps/v1", "Deployment"),
        ("v1", "ConfigMap"),
        (api.policy, "PodDisruptionBudget"),
        (api.autoscaling, "HorizontalPodAutoscaler"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    ]
    if api.keda:
        kinds += [
            ("keda.sh/v1alpha1", "ScaledObject"),
            ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ]
    return kinds


def watched_kinds(api: ApiVersions) -> frozenset[tuple[str, str]]:
    """``(apiVersion, kind)`` of the children the operator keeps watched (by its label)
    instead of reading them on each pass: every kind it prunes, Services, and the
    ServiceMonitor where the cluster serves it. Called with what the cluster serves at start:
    an optional CRD installed later is read when needed, as are preflight Jobs."""
    kinds = {*prunable_kinds(api), ("v1", "Service")}
    if api.service_monitor:
        kinds.add(("monitoring.coreos.com/v1", "ServiceMonitor"))
    return frozenset(kinds)
