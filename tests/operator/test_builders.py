"""Desired-state builders: pure functions, checked field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fraud_operator import builders
from fraud_operator.builders import ApiVersions, Detector, TrackPlan
from fraud_scorer.config import load_settings

from tests.operator.conftest import make_detector

AUTH = {
    "type": "scram-sha-512",
    "username": "fraud",
    "passwordSecret": {"secretName": "kafka-user"},
}
TLS = {"trustedCertificates": [{"secretName": "cluster-ca"}]}


def test_every_child_is_owned_labelled_and_hashed(detector: Detector) -> None:
    for child in builders.children(detector, ApiVersions()):
        meta = child["metadata"]
        assert meta["namespace"] == "shop"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "frauddetection.io/v1alpha1",
                "kind": "FraudDetector",
                "name": "retail",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "fraud-operator"
        assert meta["labels"]["app.kubernetes.io/instance"] == "retail"
        assert len(meta["annotations"][builders.HASH_ANNOTATION]) == 16


def test_config_map_holds_a_valid_scorer_config_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_detector(kafka={"bootstrapServers": "k:9093", "authentication": AUTH, "tls": TLS})
    text = builders.config_map(d)["data"][builders.CONFIG_FILE]
    assert "password" not in text
    path = tmp_path / "scorer.yaml"
    path.write_text(text)
    # What the pod does: the file from the ConfigMap, the password from the Secret's env var.
    monkeypatch.setenv(builders.PASSWORD_ENV, "s3cret")
    settings = load_settings(path)  # the scorer's own loader and contract
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.ssl_ca_location == "/etc/fraud/kafka-ca/cluster-ca-ca.crt"
    assert settings.kafka.group_id == "fraud-scorer-shop-retail"
    assert [r.name for r in settings.rules] == ["big"]
    assert str(settings.model.path) == builders.MODEL_DIR


@pytest.mark.parametrize(
    ("kafka", "protocol"),
    [
        ({"bootstrapServers": "k:9092"}, "PLAINTEXT"),
        ({"bootstrapServers": "k:9093", "tls": TLS}, "SSL"),
        ({"bootstrapServers": "k:9092", "authentication": AUTH}, "SASL_PLAINTEXT"),
        ({"bootstrapServers": "k:9093", "authentication": AUTH, "tls": TLS}, "SASL_SSL"),
    ],
)
def test_security_protocol_follows_auth_and_tls(kafka: dict[str, Any], protocol: str) -> None:
    config = builders.scorer_config(make_detector(kafka=kafka))
    assert config["kafka"]["security_protocol"] == protocol


def test_scorer_pod_is_locked_down() -> None:
    d = make_detector(kafka={"bootstrapServers": "k:9093", "authentication": AUTH, "tls": TLS})
    dep = builders.deployment(d)
    assert "replicas" not in dep["spec"]  # the autoscaler owns it
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod["initContainers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    scorer = pod["containers"][0]
    assert scorer["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert scorer["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert scorer["env"] == [
        {
            "name": "FRAUD_KAFKA__SASL_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "kafka-user", "key": "password"}},
        }
    ]
    mounts = {m["name"]: m for m in scorer["volumeMounts"]}
    assert (
        mounts["config"]["readOnly"]
        and mounts["model"]["readOnly"]
        and mounts["kafka-ca"]["readOnly"]
    )
    fetch = pod["initContainers"][0]
    assert fetch["args"] == [
        "--uri",
        "https://models.example/m1/",
        "--digest",
        "sha256:" + "c" * 64,
        "--dest",
        "/models/current",
    ]
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert dep["spec"]["selector"]["matchLabels"] == builders.selector(d)


def test_rule_edits_do_not_restart_pods_but_model_changes_do() -> None:
    base = builders.deployment(make_detector())
    restart = builders.RESTART_ANNOTATION

    def annotation(dep: dict[str, Any]) -> str:
        return str(dep["spec"]["template"]["metadata"]["annotations"][restart])

    new_rules = make_detector(rules=[{"name": "x", "expression": "tx.amount > 1.0"}])
    assert annotation(builders.deployment(new_rules)) == annotation(base)
    assert builders.config_map(new_rules) != builders.config_map(make_detector())
    new_model = make_detector(
        model={"version": "m2", "uri": "https://m/2/", "digest": "sha256:" + "d" * 64}
    )
    assert annotation(builders.deployment(new_model)) != annotation(base)


HPA_KINDS = ["ConfigMap", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Service"]


@pytest.mark.parametrize(
    ("api", "lag", "kinds"),
    [
        (ApiVersions(), None, HPA_KINDS),
        (ApiVersions(keda=True), None, HPA_KINDS),
        (
            ApiVersions(keda=True),
            500,
            ["ConfigMap", "Deployment", "PodDisruptionBudget", "ScaledObject", "Service"],
        ),
        (ApiVersions(service_monitor=True), None, [*HPA_KINDS, "ServiceMonitor"]),
    ],
    ids=["hpa", "keda-without-lag", "keda", "service-monitor"],
)
def test_children_depend_on_what_the_cluster_serves(
    api: ApiVersions, lag: int | None, kinds: list[str]
) -> None:
    d = make_detector(scaling={"minReplicas": 2, "maxReplicas": 8, "lagThreshold": lag})
    got = [c["kind"] for c in builders.children(d, api)]
    assert [k for k in got if k != "NetworkPolicy"] == kinds
    assert got.count("NetworkPolicy") == 1


@pytest.mark.parametrize("version", ["autoscaling/v2", "autoscaling/v2beta2"])
def test_hpa_uses_the_discovered_version(version: str) -> None:
    d = make_detector(scaling={"minReplicas": 2, "maxReplicas": 8, "targetCpuUtilization": 55})
    hpa = builders.horizontal_pod_autoscaler(d, ApiVersions(autoscaling=version))
    assert hpa["apiVersion"] == version
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 55


@pytest.mark.parametrize("version", ["policy/v1", "policy/v1beta1"])
def test_pdb_uses_the_discovered_version(version: str, detector: Detector) -> None:
    pdb = builders.pod_disruption_budget(detector, ApiVersions(policy=version))
    assert pdb["apiVersion"] == version
    assert pdb["spec"]["maxUnavailable"] == 1


def test_keda_scales_on_lag_with_the_same_secret() -> None:
    d = make_detector(
        kafka={"bootstrapServers": "k:9092", "authentication": AUTH},
        scaling={"minReplicas": 1, "maxReplicas": 6, "lagThreshold": 500},
    )
    kinds = [c["kind"] for c in builders.children(d, ApiVersions(keda=True))]
    assert "TriggerAuthentication" in kinds
    so = builders.scaled_object(d)
    trigger = so["spec"]["triggers"][0]
    assert trigger["metadata"]["lagThreshold"] == "500"
    assert trigger["metadata"]["consumerGroup"] == "fraud-scorer-shop-retail"
    assert trigger["authenticationRef"] == {"name": "retail-kafka"}
    auth = builders.trigger_authentication(d)
    assert auth is not None
    assert auth["spec"]["secretTargetRef"][0] == {
        "parameter": "password",
        "name": "kafka-user",
        "key": "password",
    }


def test_hash_is_stable_and_changes_with_content(detector: Detector) -> None:
    a = builders.config_map(detector)
    assert a == builders.config_map(detector)
    b = builders.config_map(make_detector(decision={"reviewAt": 0.5, "blockAt": 0.9}))
    ha, hb = (x["metadata"]["annotations"][builders.HASH_ANNOTATION] for x in (a, b))
    assert ha != hb


def test_track_plans_slice_users_and_split_outputs() -> None:
    from fraud_operator.builders import TrackPlan
    from fraud_operator.spec import ModelRef

    d = make_detector()
    new = ModelRef(version="m2", uri="https://m/2/", digest="sha256:" + "e" * 64)
    stable = builders.scorer_config(d, TrackPlan("stable", None, 10, 100))
    canary = builders.scorer_config(d, TrackPlan("canary", new, 0, 10))
    shadow = builders.scorer_config(d, TrackPlan("shadow", new, 0, 100))
    assert (stable["slice"], canary["slice"]) == (
        {"start": 10, "end": 100},
        {"start": 0, "end": 10},
    )
    assert stable["output"] == {"alerts": True, "dead_letters": True}
    assert canary["output"] == {"alerts": True, "dead_letters": False}
    assert shadow["output"] == {"alerts": False, "dead_letters": False}
    assert shadow["topics"]["decisions"] == "dec-shadow"
    groups = {c["kafka"]["group_id"] for c in (stable, canary, shadow)}
    assert len(groups) == 3  # every track reads every message
    # ... from where stable is, when it first starts.
    assert "start_from_group" not in stable["kafka"]
    assert canary["kafka"]["start_from_group"] == shadow["kafka"]["start_from_group"]
    assert canary["kafka"]["start_from_group"] == stable["kafka"]["group_id"]
    dep = builders.deployment(d, TrackPlan("canary", new, 0, 10))
    assert dep["metadata"]["name"] == "retail-scorer-canary"
    assert new.digest in dep["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert dep["spec"]["selector"]["matchLabels"]["frauddetection.io/track"] == "canary"
    # The Deployment says what it runs (rollout.recover reads it back), in metadata only.
    assert builders.running_track(d, dep) == builders.RunningTrack("canary", new, 0, 10)
    assert builders.running_track(make_detector(), builders.deployment(d)) is not None
    other = Detector("other", "shop", "uid-2", d.spec)
    assert builders.running_track(other, dep) is None  # not this detector's
    del dep["metadata"]["annotations"][builders.MODEL_ANNOTATION]
    assert builders.running_track(d, dep) is None  # made by an older operator
    # Moving the canary weight rewrites the ConfigMap only: no restart.
    moved = builders.deployment(d, TrackPlan("canary", new, 0, 50))
    annotation = builders.RESTART_ANNOTATION
    assert (
        moved["spec"]["template"]["metadata"]["annotations"][annotation]
        == dep["spec"]["template"]["metadata"]["annotations"][annotation]
    )
    assert builders.config_map(d, TrackPlan("canary", new, 0, 50)) != builders.config_map(
        d, TrackPlan("canary", new, 0, 10)
    )


def test_preflight_job_runs_the_scorers_own_loader(detector: Detector) -> None:
    from fraud_operator.spec import ModelRef

    model = ModelRef(version="m2", uri="https://m/2/", digest="sha256:" + "f" * 64)
    job = builders.preflight_job(detector, model)
    assert job["metadata"]["name"] == "retail-preflight-ffffffffff"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert pod["containers"][0]["command"] == ["python", "-m", "fraud_scorer.preflight"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


SINKS = {
    "webhook": {"urlSecret": {"secretName": "hooks", "key": "slack"}, "minAction": "block"},
    "postgres": {
        "dsnSecret": {"secretName": "cases-db", "key": "dsn"},
        "migrationDsnSecret": {"secretName": "cases-db-owner", "key": "dsn"},
    },
}


def test_sinks_run_as_their_own_locked_down_pods_with_secrets_only_in_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraud_sinks.config import load_sink_settings

    d = make_detector(
        kafka={"bootstrapServers": "k:9093", "authentication": AUTH, "tls": TLS},
        topics={
            "input": "tx",
            "decisions": "dec",
            "alerts": "alerts",
            "deadLetter": "dlq",
            "labels": "verdicts",
        },
        sinks=SINKS,
    )
    kids = {(c["kind"], c["metadata"]["name"]): c for c in builders.children(d, ApiVersions())}
    owner = {"FRAUD_POSTGRES__MIGRATION_DSN": ("cases-db-owner", "dsn")}
    for kind, secret, env, extra in (
        ("webhook", ("hooks", "slack"), builders.WEBHOOK_URL_ENV, {}),
        ("postgres", ("cases-db", "dsn"), builders.POSTGRES_DSN_ENV, owner),
    ):
        dep = kids[("Deployment", f"retail-sink-{kind}")]
        assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert {
            e["name"]: (
                e["valueFrom"]["secretKeyRef"]["name"],
                e["valueFrom"]["secretKeyRef"]["key"],
            )
            for e in container["env"]
        } == {env: secret, builders.PASSWORD_ENV: ("kafka-user", "password"), **extra}
        # The scorers' Service and PodMonitor select fraud-scorer pods only.
        assert pod_labels(dep)["app.kubernetes.io/name"] == "fraud-sink"
        text = kids[("ConfigMap", f"retail-sink-{kind}-config")]["data"][builders.SINK_CONFIG_FILE]
        path = tmp_path / f"{kind}.yaml"
        path.write_text(text)
        monkeypatch.setenv(
            env, "https://hooks.example/x" if kind == "webhook" else "postgresql://db/x"
        )
        monkeypatch.setenv(builders.PASSWORD_ENV, "s3cret")
        settings = load_sink_settings(path)  # the sink's own loader accepts it
        assert settings.kafka.group_id == f"fraud-scorer-shop-retail-sink-{kind}"
        assert settings.topics.labels == "verdicts"
        assert "hooks.example" not in text and "s3cret" not in text
    assert load_sink_settings(tmp_path / "webhook.yaml").webhook.min_action == "block"
    assert ("Service", "retail-sink-metrics") in kids


def pod_labels(dep: dict[str, Any]) -> dict[str, str]:
    return dep["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def test_no_sinks_no_sink_objects(detector: Detector) -> None:
    assert not [
        c for c in builders.children(detector, ApiVersions()) if "sink" in c["metadata"]["name"]
    ]
    only_hook = make_detector(sinks={"webhook": SINKS["webhook"]})
    names = {c["metadata"]["name"] for c in builders.children(only_hook, ApiVersions())}
    assert "retail-sink-webhook" in names and "retail-sink-postgres" not in names


def test_pruning_can_find_every_child_it_may_delete() -> None:
    """Pruning lists children by ``owned_by`` labels and the controller owner: every child of a
    prunable kind, in every plan and cluster shape, must carry both, and names are unique."""
    d = make_detector(
        sinks=SINKS,
        scaling={"minReplicas": 2, "maxReplicas": 8, "lagThreshold": 100},
        kafka={"bootstrapServers": "k:9093", "authentication": AUTH, "tls": TLS},
    )
    canary = TrackPlan("canary", d.spec.model, 0, 20)
    for api in (ApiVersions(), ApiVersions(keda=True, service_monitor=True)):
        objects = builders.children(d, api, (builders.STABLE, canary))
        prunable = {kind for _, kind in builders.prunable_kinds(api)}
        names = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert len(names) == len(set(names))
        for o in objects:
            meta = o["metadata"]
            assert builders.owned_by(d).items() <= meta["labels"].items(), meta["name"]
            assert meta["ownerReferences"][0]["uid"] == d.uid
        autoscaler = (
            {"ScaledObject", "TriggerAuthentication"} if api.keda else {"HorizontalPodAutoscaler"}
        )
        assert {o["kind"] for o in objects} & prunable == (
            {"Deployment", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} | autoscaler
        )


@pytest.mark.parametrize(("given", "rendered"), [("rulesOnly", "rules_only"), ("review", "review")])
def test_the_model_error_fallback_reaches_the_scorer_config(
    tmp_path: Path, given: str, rendered: str
) -> None:
    d = make_detector(scorer={"onModelError": given})
    path = tmp_path / "scorer.yaml"
    path.write_text(builders.config_map(d)["data"][builders.CONFIG_FILE])
    assert load_settings(path).model.on_error == rendered


def test_fields_alerts_may_carry_reach_the_scorer_config(tmp_path: Path) -> None:
    d = make_detector(scorer={"alertCarryFields": ["billing", "order_id"]})
    path = tmp_path / "scorer.yaml"
    path.write_text(builders.config_map(d)["data"][builders.CONFIG_FILE])
    assert load_settings(path).output.carry_fields == ("billing", "order_id")


def test_declared_features_reach_the_scorer_config_and_the_preflight() -> None:
    """spec.features goes into the scorer's config (parsed there by the scorer's own settings)
    and to the preflight Job, which loads the model against the same set."""
    import json

    from fraud_scorer.config import ScorerSettings
    from fraud_scorer.feature_defs import parse_feature_set

    declared = {
        "historyHours": 72,
        "features": [{"name": "amount", "kind": "field", "field": "amount"}],
    }
    d = make_detector(features=declared)
    config = builders.scorer_config(d)
    settings = ScorerSettings.model_validate(config)
    assert settings.features.definitions == parse_feature_set(declared)
    assert "features" not in builders.scorer_config(make_detector())  # v1: unchanged configs
    from fraud_operator.spec import ModelRef

    model = ModelRef(version="m2", uri="https://m/2/", digest="sha256:" + "a" * 64)
    args = builders.preflight_job(d, model)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert json.loads(args[args.index("--features") + 1]) == declared
    restart = builders.RESTART_ANNOTATION
    hashes = {
        builders.deployment(x)["spec"]["template"]["metadata"]["annotations"][restart]
        for x in (d, make_detector())
    }
    assert len(hashes) == 2  # a feature-set change restarts the scorers (the model depends on it)


STAGED = {
    "features": [
        {"name": "amount", "kind": "field", "field": "amount"},
        {"name": "merchant_tx_1h", "kind": "window", "agg": "count", "window": "1h",
         "entity": "merchant"},
        {"name": "merchant_risk_7d", "kind": "label", "agg": "fraud_rate", "window": "7d",
         "delay": "7d", "entity": "merchant"},
    ],
}  # fmt: skip


def test_staged_features_bring_the_entity_stage_and_its_table(tmp_path: Path) -> None:
    """Features per merchant or from labels: the operator runs the entity stage (config,
    Deployment, autoscaler, disruption budget, NetworkPolicy), every scorer track reads its
    table, and both configs load in the processes' own settings; without them, nothing of the
    stage is rendered (and a pass prunes what an earlier spec had)."""
    from fraud_scorer.entity_stage import load_settings as load_stage_settings

    d = make_detector(
        features=STAGED,
        topics={"input": "tx", "decisions": "d", "alerts": "a", "deadLetter": "dlq",
                "labels": "verdicts"},
        entityStage={"maxReplicas": 8},
    )  # fmt: skip
    api = ApiVersions()
    kinds = [(o["kind"], o["metadata"]["name"]) for o in builders.stage_children(d, api)]
    assert kinds == [
        ("ConfigMap", "retail-entity-stage-config"),
        ("Deployment", "retail-entity-stage"),
        ("PodDisruptionBudget", "retail-entity-stage"),
        ("HorizontalPodAutoscaler", "retail-entity-stage"),
        ("NetworkPolicy", "retail-entity-stage"),
    ]
    assert all(o in builders.children(d, api) for o in builders.stage_children(d, api))
    path = tmp_path / "stage.yaml"
    path.write_text(builders.stage_children(d, api)[0]["data"][builders.STAGE_CONFIG_FILE])
    stage = load_stage_settings(path)
    assert (stage.topics.input, stage.topics.labels) == ("tx", "verdicts")
    assert stage.topics.by_entity == "retail-by-entity"
    assert stage.topics.entity_features == "retail-entity-features"
    assert stage.kafka.group_id.endswith("-entity-stage")
    assert stage.features.version == builders.staged_features(d).version  # type: ignore[union-attr]
    pod = builders.stage_deployment(d)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "fraud_scorer.entity_stage"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    hpa = builders.stage_children(d, api)[3]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 8)
    for plan in (TrackPlan(), TrackPlan(track="canary", start=0, end=10)):
        scorer = tmp_path / f"{plan.track}.yaml"
        scorer.write_text(builders.config_map(d, plan)["data"][builders.CONFIG_FILE])
        assert load_settings(scorer).topics.entity_features == "retail-entity-features"
    plain = make_detector()
    assert builders.stage_children(plain, api) == []
    assert "entity_features" not in builders.scorer_config(plain)["topics"]
    assert not any("entity-stage" in o["metadata"]["name"] for o in builders.children(plain, api))


def test_placement_reaches_every_pod_the_detector_runs() -> None:
    """``spec.placement``: a dedicated, tainted node pool and a priority for scorers (every
    track), the preflight Job, sinks and the entity stage; the scorers keep their spread."""
    place = {
        "nodeSelector": {"pool": "fraud"},
        "tolerations": [{"key": "dedicated", "value": "fraud", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "priorityClassName": "payments-critical",
    }  # fmt: skip
    sinks = {"webhook": {"urlSecret": {"secretName": "hooks", "key": "url"}}}
    d = make_detector(placement=place, sinks=sinks)
    pods = [
        c["spec"]["template"]["spec"]
        for c in builders.children(d, ApiVersions())
        if c["kind"] == "Deployment"
    ]
    candidate = d.spec.model.model_copy(update={"digest": "sha256:" + "e" * 64})
    pods.append(builders.preflight_job(d, candidate)["spec"]["template"]["spec"])
    assert len(pods) == 3
    for pod in pods:
        assert pod["nodeSelector"] == {"pool": "fraud"}
        assert pod["tolerations"] == [
            {"key": "dedicated", "operator": "Equal", "value": "fraud", "effect": "NoSchedule"}
        ]
        assert pod["priorityClassName"] == "payments-critical"
        assert "nodeAffinity" in pod["affinity"]
    scorer = pods[0]
    assert "podAntiAffinity" in scorer["affinity"]  # the scorers' own spread stays
    assert scorer["topologySpreadConstraints"]
    plain = builders.deployment(make_detector())["spec"]["template"]["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain
    assert set(plain["affinity"]) == {"podAntiAffinity"}


def test_an_object_store_model_is_fetched_as_its_service_account() -> None:
    """s3:// and gs:// models: the scorer pods and the preflight Job run as the model's
    ServiceAccount (workload identity binds it to read access), still with no API token; a
    model without one leaves the namespace's default, and sinks never get it."""
    from fraud_operator.spec import ModelRef

    model = {
        "version": "v3",
        "uri": "s3://models/fraud/v3",
        "digest": "sha256:" + "c" * 64,
        "serviceAccountName": "fraud-models-reader",
    }
    d = make_detector(model=model, sinks=SINKS)
    pod = builders.deployment(d)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "fraud-models-reader"
    assert pod["automountServiceAccountToken"] is False
    assert pod["initContainers"][0]["args"][:2] == ["--uri", "s3://models/fraud/v3"]
    candidate = ModelRef.model_validate({**model, "version": "v4", "uri": "gs://m/fraud/v4"})
    job = builders.preflight_job(d, candidate)["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "fraud-models-reader"
    for kind in ("webhook", "postgres"):
        sink = builders.sink_deployment(d, kind)
        assert "serviceAccountName" not in sink["spec"]["template"]["spec"]
    assert (
        "serviceAccountName" not in builders.deployment(make_detector())["spec"]["template"]["spec"]
    )
