"""NetworkPolicies: scorer pods (every track, the preflight Jobs too) take traffic only on the
metrics port and reach only DNS, Kafka and the model server; sink pods take traffic only on
their metrics port."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from fraud_operator.builders.monitoring import SINK_METRICS_PORT
from fraud_operator.builders.names import (
    SCORER_APP,
    SINK_APP,
    labels,
    pods_of,
    scorer_policy_name,
    sink_labels,
    sinks_policy_name,
)
from fraud_operator.builders.objects import Detector, owned
from fraud_operator.builders.scorer import METRICS_PORT
from fraud_operator.spec import ModelRef


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
    return owned(
        d,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        scorer_policy_name(d),
        {
            "spec": {
                "podSelector": {"matchLabels": pods_of(d, SCORER_APP)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"ports": [{"port": METRICS_PORT, "protocol": "TCP"}]}],
                "egress": [
                    {"ports": dns},
                    {"ports": [{"port": p, "protocol": "TCP"} for p in sorted(egress_ports)]},
                ],
            }
        },
        labels(d, None),
    )


def sink_network_policy(d: Detector) -> dict[str, Any]:
    """Sink pods take traffic only on their metrics port. Their egress is left open: the
    webhook and database addresses live in Secrets the operator does not parse."""
    return owned(
        d,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        sinks_policy_name(d),
        {
            "spec": {
                "podSelector": {"matchLabels": pods_of(d, SINK_APP)},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": SINK_METRICS_PORT, "protocol": "TCP"}]}],
            }
        },
        sink_labels(d, None),
    )
