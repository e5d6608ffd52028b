"""Every pod the project runs passes the "restricted" Pod Security Standard, and scorers are
fenced by a NetworkPolicy: ingress to metrics only, egress to DNS, Kafka and the model server."""

from __future__ import annotations

from typing import Any

import pytest
from fraud_operator import builders
from fraud_operator.builders import ApiVersions, TrackPlan
from fraud_operator.spec import ModelRef

from tests.chart.test_chart import render
from tests.operator.conftest import make_detector
from tests.pod_security import restricted_violations

SINKS = {
    "webhook": {"urlSecret": {"secretName": "hooks", "key": "url"}},
    "postgres": {"dsnSecret": {"secretName": "db", "key": "dsn"}},
}
CONSOLE = {
    "dsnSecret": {"secretName": "console-db", "key": "dsn"},
    "sessionSecret": {"secretName": "console", "key": "session"},
    "proxy": {"trustedProxies": ["10.0.0.0/8"], "groups": {"fraud-ops": "analyst"}},
}
KAFKA = {
    "bootstrapServers": "k-0:9093,k-1:9093",
    "authentication": {
        "type": "scram-sha-512",
        "username": "fraud",
        "passwordSecret": {"secretName": "kafka-user"},
    },
    "tls": {"trustedCertificates": [{"secretName": "cluster-ca"}]},
}


def all_pods() -> dict[str, dict[str, Any]]:
    d = make_detector(kafka=KAFKA, sinks=SINKS, console=CONSOLE)
    candidate = ModelRef(
        version="m2", uri="https://models.example/m2/", digest="sha256:" + "d" * 64
    )
    plans = (
        TrackPlan("stable", None, 20, 100),
        TrackPlan("canary", candidate, 0, 20),
        TrackPlan("shadow", candidate),
    )
    pods = {
        f"{c['kind']}/{c['metadata']['name']}": c["spec"]["template"]["spec"]
        for c in builders.children(d, ApiVersions(), plans)
        if c["kind"] == "Deployment"
    }
    pods["Job/preflight"] = builders.preflight_job(d, candidate)["spec"]["template"]["spec"]
    for doc in render("values.yaml"):
        if doc["kind"] == "Deployment":
            pods[f"chart/{doc['metadata']['name']}"] = doc["spec"]["template"]["spec"]
    return pods


def test_every_pod_passes_the_restricted_pod_security_standard() -> None:
    pods = all_pods()
    assert {
        "Deployment/retail-scorer",
        "Deployment/retail-scorer-canary",
        "Deployment/retail-scorer-shadow",
        "Deployment/retail-sink-webhook",
        "Deployment/retail-sink-postgres",
        "Deployment/retail-console",
        "Job/preflight",
        "chart/fraud-detector-operator",
    } <= set(pods)
    assert {name: restricted_violations(pod) for name, pod in pods.items()} == {
        name: [] for name in pods
    }


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"hostNetwork": True}, "hostNetwork"),
        ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "hostPath"),
        ({"securityContext": {}}, "seccompProfile"),
    ],
)
def test_the_checker_catches_violations(change: dict[str, Any], needle: str) -> None:
    pod = {**all_pods()["Deployment/retail-scorer"], **change}
    assert any(needle in v for v in restricted_violations(pod))
    container = dict(pod["containers"][0])
    container["securityContext"] = {
        **container["securityContext"],
        "allowPrivilegeEscalation": True,
    }
    assert "scorer: allowPrivilegeEscalation is not false" in restricted_violations(
        {**pod, "containers": [container]}
    )


def test_scorers_reach_only_dns_kafka_and_the_model_server() -> None:
    d = make_detector(kafka=KAFKA, networkPolicy={"extraEgressPorts": [9094]})
    candidate = ModelRef(
        version="m2", uri="http://models.internal:8000/m2/", digest="sha256:" + "d" * 64
    )
    kids = builders.children(d, ApiVersions(), (TrackPlan(), TrackPlan("canary", candidate, 0, 10)))
    (policy,) = [c for c in kids if c["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "fraud-scorer",  # every track and the preflight Jobs
        "app.kubernetes.io/instance": "retail",
    }
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": 9102, "protocol": "TCP"}]}]
    dns, rest = spec["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    # Kafka 9093 (both brokers), the extra broker port, https model 443, the candidate's 8000.
    assert [p["port"] for p in rest["ports"]] == [443, 8000, 9093, 9094]
    assert all("to" not in rule for rule in spec["egress"])  # ports only: IPs are not known


def test_sinks_get_an_ingress_policy_and_policies_can_be_switched_off() -> None:
    d = make_detector(sinks=SINKS)
    names = {c["metadata"]["name"]: c for c in builders.children(d, ApiVersions())}
    sinks = names["retail-sinks"]["spec"]
    assert sinks["policyTypes"] == ["Ingress"]
    assert sinks["ingress"] == [{"ports": [{"port": 9103, "protocol": "TCP"}]}]
    off = make_detector(sinks=SINKS, networkPolicy={"enabled": False})
    assert not [c for c in builders.children(off, ApiVersions()) if c["kind"] == "NetworkPolicy"]


def test_kafka_ports_default_to_9092() -> None:
    d = make_detector(kafka={"bootstrapServers": "a, b:19092,SASL_SSL://c:9093"})
    assert builders.kafka_ports(d) == [9092, 9093, 19092]
