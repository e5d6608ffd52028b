"""The analyst console's workload: what the operator runs when a FraudDetector asks for it,
checked against the console's own settings loader and the console app's own routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fraud_operator import builders
from fraud_operator.builders import ApiVersions
from fraud_operator.spec import FraudDetectorSpec
from fraud_operator.validation import check_images, required_secrets
from pydantic import ValidationError

from tests.operator.conftest import make_detector, spec_dict

POSTGRES = {"postgres": {"dsnSecret": {"secretName": "cases-db", "key": "dsn"}}}
PROXY = {
    "dsnSecret": {"secretName": "console-db", "key": "dsn"},
    "sessionSecret": {"secretName": "console", "key": "session"},
    "proxy": {"trustedProxies": ["10.0.0.0/8"], "groups": {"fraud-ops": "analyst"}},
}
BUILTIN = {
    "dsnSecret": {"secretName": "console-db", "key": "dsn"},
    "sessionSecret": {"secretName": "console", "key": "session"},
    "auth": "builtin",
    "usersSecret": {"secretName": "console", "key": "users"},
}
KAFKA = {
    "bootstrapServers": "k:9093",
    "authentication": {
        "type": "scram-sha-512",
        "username": "fraud",
        "passwordSecret": {"secretName": "kafka-user"},
    },
}
TOPICS = {"input": "tx", "decisions": "dec", "alerts": "al", "deadLetter": "dlq", "labels": "lb"}


def kids(**overrides: Any) -> dict[tuple[str, str], dict[str, Any]]:
    d = make_detector(sinks=POSTGRES, **overrides)
    return {(c["kind"], c["metadata"]["name"]): c for c in builders.children(d, ApiVersions(
        service_monitor=True))}  # fmt: skip


def env_of(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
    }


def test_the_console_runs_from_its_config_map_and_secrets_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraud_console.settings import load_console_settings

    objs = kids(console=BUILTIN, kafka=KAFKA, topics=TOPICS)
    dep = objs[("Deployment", "retail-console")]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/fraud-detector/console:0.1.0"
    assert container["command"] == ["fraud-console"]
    assert env_of(container) == {
        "FRAUD_DSN": ("console-db", "dsn"),
        "FRAUD_SESSION_SECRET": ("console", "session"),
        "FRAUD_AUTH__USERS": ("console", "users"),
        builders.PASSWORD_ENV: ("kafka-user", "password"),
    }
    assert dep["spec"]["replicas"] == 2
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    text = objs[("ConfigMap", "retail-console-config")]["data"][builders.CONSOLE_CONFIG_FILE]
    path = tmp_path / "console.yaml"
    path.write_text(text)
    # What the kubelet puts in the environment from the Secrets.
    monkeypatch.setenv("FRAUD_DSN", "postgresql://console@db/cases")
    monkeypatch.setenv("FRAUD_SESSION_SECRET", "s" * 40)
    monkeypatch.setenv("FRAUD_AUTH__USERS", '{"alice": {"password": "scrypt$x", "role": "admin"}}')
    monkeypatch.setenv(builders.PASSWORD_ENV, "kafka-s3cret")
    settings = load_console_settings(path)  # the console's own loader accepts it
    assert settings.auth.users["alice"].role == "admin"
    assert settings.labels_topic == "lb" and settings.kafka is not None
    assert settings.kafka.sasl_username == "fraud"
    assert (settings.port, settings.metrics.port) == (8080, 9105)
    assert "s3cret" not in text and "postgresql" not in text and "scrypt" not in text
    # The config's hash restarts the pods when it changes.
    assert dep["spec"]["template"]["metadata"]["annotations"][builders.RESTART_ANNOTATION]


def test_the_probes_and_ports_are_the_console_apps_own(tmp_path: Path) -> None:
    """The probe paths exist in the console app; the Service sends pages to ``http`` and
    Prometheus to ``metrics``, and the ServiceMonitor scrapes only the latter."""
    from fraud_console.app import create_app
    from fraud_console.settings import ConsoleSettings

    objs = kids(console=PROXY)
    (container,) = objs[("Deployment", "retail-console")]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9105}
    app = create_app(
        ConsoleSettings(dsn="postgresql://x", session_secret="s" * 40, auth={"mode": "builtin",
                        "users": {"a": {"password": "scrypt$x"}}}),
        store=None,  # type: ignore[arg-type]  # routes are only listed
    )  # fmt: skip
    routes = {getattr(r, "path", None) for r in app.routes}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "http" and get["path"] in routes
    service = objs[("Service", "retail-console")]["spec"]
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["ports"]} == {
        ("http", 80, "http"),
        ("metrics", 9105, "metrics"),
    }
    assert service["selector"] == {
        "app.kubernetes.io/name": "fraud-console",
        "app.kubernetes.io/instance": "retail",
    }
    monitor = objs[("ServiceMonitor", "retail-console")]["spec"]
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]
    budget = objs[("PodDisruptionBudget", "retail-console")]["spec"]
    assert budget["maxUnavailable"] == 1
    text = objs[("ConfigMap", "retail-console-config")]["data"][builders.CONSOLE_CONFIG_FILE]
    assert "10.0.0.0/8" in text and "fraud-ops" in text and "kafka" in text


def test_the_pages_port_is_open_only_to_whom_access_names() -> None:
    default = kids(console=PROXY)[("NetworkPolicy", "retail-console")]["spec"]
    assert default["policyTypes"] == ["Ingress"]
    pages, metrics = default["ingress"]
    assert pages == {"from": [{"podSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]}
    assert metrics == {"ports": [{"port": 9105, "protocol": "TCP"}]}
    named = {**PROXY, "access": {"namespaces": ["ingress-nginx"], "podLabels": {"app": "proxy"}}}
    pages, _ = kids(console=named)[("NetworkPolicy", "retail-console")]["spec"]["ingress"]
    assert pages["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"podSelector": {"matchLabels": {"app": "proxy"}}},
    ]
    off = kids(console=PROXY, networkPolicy={"enabled": False})
    assert ("NetworkPolicy", "retail-console") not in off


def test_without_console_nothing_of_it_runs_and_labels_can_stay_unpublished() -> None:
    assert not [name for _, name in kids() if "console" in name]
    quiet = kids(console={**PROXY, "publishLabels": False}, kafka=KAFKA, topics=TOPICS)
    (container,) = quiet[("Deployment", "retail-console")]["spec"]["template"]["spec"]["containers"]
    assert builders.PASSWORD_ENV not in env_of(container)
    text = quiet[("ConfigMap", "retail-console-config")]["data"][builders.CONSOLE_CONFIG_FILE]
    assert "kafka" not in text and "labels_topic" not in text


@pytest.mark.parametrize(
    ("console", "sinks", "message"),
    [
        (PROXY, None, "console needs sinks.postgres"),
        ({**PROXY, "proxy": None}, POSTGRES, "console.auth proxy needs console.proxy"),
        ({**BUILTIN, "usersSecret": None}, POSTGRES, "console.auth builtin needs"),
        (
            {**PROXY, "proxy": {**PROXY["proxy"], "trustedProxies": ["10.0.0.300/8"]}},
            POSTGRES,
            "console.proxy.trustedProxies",
        ),
        (
            {**PROXY, "proxy": {**PROXY["proxy"], "groups": {"ops": "root"}}},
            POSTGRES,
            "viewer",
        ),
    ],
)
def test_a_console_that_cannot_work_is_refused_with_a_clear_message(
    console: dict[str, Any], sinks: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
        FraudDetectorSpec.model_validate(spec_dict(console=console, sinks=sinks))


def test_the_console_image_and_secrets_are_checked_like_the_others() -> None:
    spec = FraudDetectorSpec.model_validate(
        spec_dict(sinks=POSTGRES, console={**BUILTIN, "image": "evil.example/console:1"})
    )
    problem = check_images(spec, ("ghcr.io/fraud-detector/*",))
    assert problem is not None and "evil.example/console:1" in problem.message
    assert required_secrets(spec) == {
        "cases-db": {"dsn"},
        "console-db": {"dsn"},
        "console": {"session", "users"},
    }


def test_images_default_to_the_operators_so_a_mirror_is_one_setting() -> None:
    """A FraudDetector naming no image runs the operator's (``--scorer-image``,
    ``--console-image``: the chart's ``scorer.image`` and ``console.image``); one naming its
    own runs that, if the platform team allows it. The operator's own are always allowed."""
    from fraud_operator.builders import Detector
    from fraud_operator.spec import DefaultImages

    mirror = DefaultImages("mirror.example/fraud/scorer:7", "mirror.example/fraud/console:7")
    spec = FraudDetectorSpec.model_validate(spec_dict(sinks=POSTGRES, console=PROXY))
    images = {
        c["metadata"]["name"]: c["spec"]["template"]["spec"]["containers"][0]["image"]
        for c in builders.children(Detector("retail", "shop", "u", spec, mirror), ApiVersions())
        if c["kind"] == "Deployment"
    }
    assert images == {
        "retail-scorer": "mirror.example/fraud/scorer:7",
        "retail-sink-postgres": "mirror.example/fraud/scorer:7",  # the sinks run the scorer's
        "retail-console": "mirror.example/fraud/console:7",
    }
    assert check_images(spec, ("ghcr.io/fraud-detector/*",), mirror) is None
    own = FraudDetectorSpec.model_validate(
        spec_dict(scorer={"image": "registry.example/team/scorer:2"})
    )
    assert Detector("r", "s", "u", own, mirror).scorer_image == "registry.example/team/scorer:2"
    refused = check_images(own, ("ghcr.io/fraud-detector/*",), mirror)
    assert refused is not None and refused.reason == "ImageNotAllowed"
    # Without a mirror: the project's images, at the operator's version.
    assert Detector("r", "s", "u", spec).console_image == "ghcr.io/fraud-detector/console:0.1.0"
