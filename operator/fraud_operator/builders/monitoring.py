"""How Prometheus finds scorers and sinks: one metrics Service each for all tracks and for all
sinks (told apart by labels), and ServiceMonitors where the Prometheus Operator is installed."""

from __future__ import annotations

from typing import Any

from fraud_operator.builders.names import (
    SCORER_APP,
    SINK_APP,
    labels,
    pods_of,
    scorer_monitor_name,
    scorer_service_name,
    sink_labels,
    sink_monitor_name,
    sink_service_name,
)
from fraud_operator.builders.objects import Detector, owned
from fraud_operator.builders.scorer import METRICS_PORT

SINK_METRICS_PORT = 9103


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
    return owned(d, "v1", "Service", name, body, object_labels)


def service_monitor_for(d: Detector, name: str, object_labels: dict[str, str]) -> dict[str, Any]:
    """Prometheus scrapes the ``metrics`` port of the Service labelled ``object_labels``."""
    endpoints = [{"port": "metrics", "interval": "15s", "path": "/metrics"}]
    body = {"spec": {"selector": {"matchLabels": object_labels}, "endpoints": endpoints}}
    return owned(d, "monitoring.coreos.com/v1", "ServiceMonitor", name, body, object_labels)


def service(d: Detector) -> dict[str, Any]:
    """Metrics endpoint of every track (tracks are told apart by the track label)."""
    return _metrics_service(
        d, scorer_service_name(d), pods_of(d, SCORER_APP), METRICS_PORT, labels(d, None)
    )


def service_monitor(d: Detector) -> dict[str, Any]:
    return service_monitor_for(d, scorer_monitor_name(d), labels(d, None))


def sink_service(d: Detector) -> dict[str, Any]:
    """Metrics endpoint of every sink (told apart by the sink label)."""
    return _metrics_service(
        d, sink_service_name(d), pods_of(d, SINK_APP), SINK_METRICS_PORT, sink_labels(d, None)
    )


def sink_service_monitor(d: Detector) -> dict[str, Any]:
    return service_monitor_for(d, sink_monitor_name(d), sink_labels(d, None))
