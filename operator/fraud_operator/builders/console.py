"""The analyst console's workload (docs/console.md), deployed when the spec has ``console``.

A Deployment of ``fraud-console`` (its own image), its ConfigMap, a Service with the pages'
port and the metrics port, a disruption budget, a NetworkPolicy (the pages' port only from
``console.access``; the metrics port to Prometheus) and a ServiceMonitor where the Prometheus
Operator is installed. The case store's DSN, the session secret, the built-in users and the
Kafka password reach the pod only as environment variables from their Secrets.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from fraud_operator.builders.monitoring import service_monitor_for
from fraud_operator.builders.names import (
    CONSOLE_APP,
    console_config_name,
    console_labels,
    console_name,
    pods_of,
)
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
from fraud_operator.builders.scaling import one_at_a_time
from fraud_operator.spec import Console

CONSOLE_PORT: Final = 8080
CONSOLE_METRICS_PORT: Final = 9105
CONSOLE_CONFIG_FILE: Final = "console.yaml"
CONSOLE_DSN_ENV: Final = "FRAUD_DSN"
CONSOLE_SESSION_ENV: Final = "FRAUD_SESSION_SECRET"
CONSOLE_USERS_ENV: Final = "FRAUD_AUTH__USERS"
# The namespace label every cluster since 1.21 sets on each namespace.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"


def _console(d: Detector) -> Console:
    assert d.spec.console is not None
    return d.spec.console


def console_config(d: Detector) -> dict[str, Any]:
    """The console's config file (``fraud_console.settings.ConsoleSettings``), without the
    DSN, the session secret, the users' hashes or the Kafka password."""
    c = _console(d)
    auth: dict[str, Any] = {"mode": c.auth}
    if c.proxy is not None and c.auth == "proxy":
        auth["proxy"] = {
            "user_header": c.proxy.user_header,
            "groups_header": c.proxy.groups_header,
            "trusted_proxies": list(c.proxy.trusted_proxies),
            "groups": dict(c.proxy.groups),
        }
    config: dict[str, Any] = {
        "host": "0.0.0.0",  # noqa: S104 - in-cluster; the NetworkPolicy says who connects
        "port": CONSOLE_PORT,
        "secure_cookies": c.secure_cookies,
        "auth": auth,
        "metrics": {"host": "0.0.0.0", "port": CONSOLE_METRICS_PORT},  # noqa: S104
    }
    if c.publish_labels:
        kafka = kafka_config(d, f"{d.consumer_group}-console", console_name(d))
        config |= {"kafka": kafka, "labels_topic": d.spec.topics.labels}
    return config


def console_config_map(d: Detector) -> dict[str, Any]:
    text = yaml.safe_dump(console_config(d), sort_keys=False)
    return owned(
        d, "v1", "ConfigMap", console_config_name(d), {"data": {CONSOLE_CONFIG_FILE: text}},
        console_labels(d),
    )  # fmt: skip


def console_deployment(d: Detector) -> dict[str, Any]:
    """The console's pods: probes on the pages' port (``/healthz`` answers while the server
    does; ``/readyz`` while the case store does), rolled one pod at a time."""
    c = _console(d)
    env = [
        secret_env(CONSOLE_DSN_ENV, c.dsn_secret.secret_name, c.dsn_secret.key),
        secret_env(CONSOLE_SESSION_ENV, c.session_secret.secret_name, c.session_secret.key),
    ]
    if c.auth == "builtin" and c.users_secret is not None:
        env.append(secret_env(CONSOLE_USERS_ENV, c.users_secret.secret_name, c.users_secret.key))
    if c.publish_labels:
        env += kafka_env(d)
    volumes, mounts = pod_volumes(d, console_config_name(d), "16Mi")
    probe = {"port": "http"}
    container = {
        "name": "console",
        "image": d.console_image,
        "imagePullPolicy": c.image_pull_policy,
        "command": ["fraud-console"],
        "args": ["--config", f"{CONFIG_DIR}/{CONSOLE_CONFIG_FILE}"],
        "env": env,
        "ports": [
            {"name": "http", "containerPort": CONSOLE_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": CONSOLE_METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": c.resources.model_dump(exclude_none=True),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    return owned(
        d,
        "apps/v1",
        "Deployment",
        console_name(d),
        {
            "spec": {
                "replicas": c.replicas,
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": pods_of(d, CONSOLE_APP)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "template": {
                    "metadata": {
                        "labels": console_labels(d),
                        "annotations": {
                            RESTART_ANNOTATION: content_hash(console_config(d)),
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(CONSOLE_METRICS_PORT),
                        },
                    },
                    "spec": pod_spec(d, [container], volumes),
                },
            }
        },
        console_labels(d),
    )


def console_service(d: Detector) -> dict[str, Any]:
    """The pages on port 80 (for an Ingress or the OIDC proxy), the metrics on their own."""
    ports = [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "metrics",
            "port": CONSOLE_METRICS_PORT,
            "targetPort": "metrics",
            "protocol": "TCP",
        },
    ]
    body = {"spec": {"selector": pods_of(d, CONSOLE_APP), "ports": ports}}
    return owned(d, "v1", "Service", console_name(d), body, console_labels(d))


def console_service_monitor(d: Detector) -> dict[str, Any]:
    return service_monitor_for(d, console_name(d), console_labels(d))


def console_disruption_budget(d: Detector, api: ApiVersions) -> dict[str, Any]:
    return one_at_a_time(d, api, console_name(d), pods_of(d, CONSOLE_APP), console_labels(d))


def console_network_policy(d: Detector) -> dict[str, Any]:
    """The pages' port only from ``console.access`` (any pod of the namespace when it names
    nobody); the metrics port from anywhere. Egress is left open: the case store's address
    lives in a Secret the operator does not read."""
    access = _console(d).access
    peers: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}}
        for ns in access.namespaces
    ]
    if access.pod_labels:
        peers.append({"podSelector": {"matchLabels": dict(access.pod_labels)}})
    if not peers:
        peers.append({"podSelector": {}})
    ingress = [
        {"from": peers, "ports": [{"port": CONSOLE_PORT, "protocol": "TCP"}]},
        {"ports": [{"port": CONSOLE_METRICS_PORT, "protocol": "TCP"}]},
    ]
    return owned(
        d,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        console_name(d),
        {
            "spec": {
                "podSelector": {"matchLabels": pods_of(d, CONSOLE_APP)},
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            }
        },
        console_labels(d),
    )


def console_children(d: Detector, api: ApiVersions) -> list[dict[str, Any]]:
    """The console's objects, or none without ``console`` (a pass then prunes what an
    earlier spec had; its Service and ServiceMonitor stay, as every Service does)."""
    if d.spec.console is None:
        return []
    out = [
        console_config_map(d),
        console_deployment(d),
        console_service(d),
        console_disruption_budget(d, api),
    ]
    if d.spec.network_policy.enabled:
        out.append(console_network_policy(d))
    if api.service_monitor:
        out.append(console_service_monitor(d))
    return out
