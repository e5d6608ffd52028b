"""Validation problems and status conditions: pure functions, parametrized."""

from __future__ import annotations

from typing import Any

import pytest
from fraud_operator.kube import is_subset
from fraud_operator.spec import FraudDetectorSpec
from fraud_operator.status import build_status, transitions
from fraud_operator.validation import Problem, parse_spec, validate

from tests.operator.conftest import SHA, spec_dict

AUTH = {"type": "scram-sha-512", "username": "u", "passwordSecret": {"secretName": "kafka-user"}}
PLAIN = {**AUTH, "type": "plain"}
TLS = {"trustedCertificates": [{"secretName": "kafka-ca"}]}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"decision": {"reviewAt": 0.9, "blockAt": 0.5}}, "reviewAt (0.9) must not be above"),
        ({"scaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas (5) is above"),
        (
            {"rules": [{"name": "a", "expression": "true"}, {"name": "a", "expression": "false"}]},
            "repeated: a",
        ),
        ({"model": {"version": "m", "uri": "u", "digest": "xyz"}}, "spec.model.digest"),
        ({"rules": [{"name": "Bad_Name", "expression": "true"}]}, "spec.rules.0.name"),
        ({"surprise": 1}, "spec.surprise: Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_name_the_field(overrides: dict[str, Any], message: str) -> None:
    result = parse_spec(spec_dict(**overrides))
    assert isinstance(result, Problem)
    assert result.reason == "InvalidSpec"
    assert message in result.message


def _spec(**overrides: Any) -> FraudDetectorSpec:
    return FraudDetectorSpec.model_validate(spec_dict(**overrides))


@pytest.mark.parametrize(
    ("uri", "allow_http", "message"),
    [
        ("http://models.shop:8000/m1/", False, "set allowHttp: true"),
        ("https://reader:T0P-S3CRET@models.example/m1/", False, "carries credentials"),
        ("https://models.example/m1/?X-Amz-Signature=T0P-S3CRET", False, "no query string"),
        ("ftp://models.example/m1/", True, "unsupported model URI scheme 'ftp'"),
        ("gopher://T0P-S3CRET/m1/", False, "unsupported model URI scheme 'gopher'"),
        ("s3://AKIA0:T0P-S3CRET@models/m1/", False, "carries credentials"),
        ("gs://T0P-S3CRET_/m1/", False, "gs://BUCKET/PATH"),
    ],
)
def test_model_uris_the_fetch_would_refuse_are_refused_first(
    uri: str, allow_http: bool, message: str
) -> None:
    """The fetch's URI policy, reported as ModelReady=False before any pod tries it; the
    message never repeats the URI (it may hold a credential)."""
    model = {"version": "m1", "uri": uri, "digest": SHA, "allowHttp": allow_http}
    problems = validate(_spec(model=model), "shop", {}, None)
    assert [(p.reason, p.condition) for p in problems] == [("ModelUriRefused", "ModelReady")]
    assert message in problems[0].message and "T0P-S3CRET" not in problems[0].message
    status = build_status(
        generation=1,
        problems=problems,
        deployment=None,
        model_version=None,
        rules_version=None,
        previous=[],
        now="2026-12-02T00:00:00Z",
    )
    ready = {c["type"]: c for c in status["conditions"]}["ModelReady"]
    assert (ready["status"], ready["reason"]) == ("False", "ModelUriRefused")
    model["allowHttp"] = True
    assert validate(_spec(model=model | {"uri": "http://models.shop:8000/"}), "s", {}, None) == []


@pytest.mark.parametrize(
    ("spec", "secrets", "partitions", "reasons"),
    [
        (_spec(), {}, None, []),
        (_spec(), {}, 4, []),
        (_spec(scaling={"minReplicas": 1, "maxReplicas": 8}), {}, 4, ["TooManyReplicas"]),
        (
            _spec(rules=[{"name": "x", "expression": "tx.amount > 'a'"}]),
            {},
            None,
            ["RuleCompileError"],
        ),
        (
            _spec(rules=[{"name": "x", "expression": "features.nope > 1.0"}]),
            {},
            None,
            ["RuleCompileError"],
        ),
        (
            _spec(kafka={"bootstrapServers": "k", "authentication": AUTH}),
            {"kafka-user": None},
            None,
            ["SecretMissing"],
        ),
        (
            _spec(kafka={"bootstrapServers": "k", "authentication": AUTH}),
            {"kafka-user": {"user"}},
            None,
            ["SecretKeyMissing"],
        ),
        (
            _spec(kafka={"bootstrapServers": "k", "authentication": AUTH}),
            {"kafka-user": {"password"}},
            None,
            [],
        ),
        (
            _spec(sinks={"postgres": {"dsnSecret": {"secretName": "cases-db", "key": "dsn"}}}),
            {"cases-db": None},
            None,
            ["SecretMissing"],
        ),
        (
            _spec(sinks={"webhook": {"urlSecret": {"secretName": "hooks", "key": "slack"}}}),
            {"hooks": {"teams"}},
            None,
            ["SecretKeyMissing"],
        ),
        (
            _spec(kafka={"bootstrapServers": "k", "authentication": PLAIN}),
            {"kafka-user": {"password"}},
            None,
            ["PlaintextCredentials"],
        ),
        (
            _spec(kafka={"bootstrapServers": "k", "authentication": PLAIN, "tls": TLS}),
            {"kafka-user": {"password"}, "kafka-ca": {"ca.crt"}},
            None,
            [],
        ),
        (_spec(scorer={"image": "evil.example/miner:1"}), {}, None, ["ImageNotAllowed"]),
        (
            _spec(sinks={"image": "ghcr.io/fraud-detector.evil/sink:1"}),
            {},
            None,
            ["ImageNotAllowed"],
        ),
        (_spec(scorer={"image": "ghcr.io/fraud-detector/scorer@sha256:" + "a" * 64}), {}, None, []),
    ],
    ids=[
        "ok",
        "ok-partitions",
        "too-many",
        "bad-cel",
        "unknown-feature",
        "no-secret",
        "no-key",
        "secret-ok",
        "no-sink-secret",
        "no-sink-key",
        "plain-in-clear",
        "plain-in-tls",
        "image-not-allowed",
        "sink-image-lookalike",
        "image-by-digest",
    ],
)
def test_validation_chain(
    spec: FraudDetectorSpec,
    secrets: dict[str, set[str] | None],
    partitions: int | None,
    reasons: list[str],
) -> None:
    problems = validate(spec, "shop", secrets, partitions)
    assert [p.reason for p in problems] == reasons
    for p in problems:
        assert p.message
    if reasons == ["RuleCompileError"]:
        assert problems[0].condition == "RulesValid"


def _deployment(wanted: int, ready: int, updated: int) -> dict[str, Any]:
    return {
        "spec": {"replicas": wanted},
        "status": {"readyReplicas": ready, "updatedReplicas": updated},
    }


def _conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("problems", "deployment", "phase", "expected"),
    [
        (
            [],
            None,
            "Pending",
            {"Ready": ("False", "Creating"), "Progressing": ("True", "Creating")},
        ),
        (
            [],
            _deployment(2, 0, 2),
            "Pending",
            {"Ready": ("False", "ReplicasNotReady"), "ModelReady": ("Unknown", "WaitingForPods")},
        ),
        (
            [],
            _deployment(2, 2, 2),
            "Ready",
            {
                "Ready": ("True", "ScorersReady"),
                "Progressing": ("False", "Stable"),
                "ModelReady": ("True", "Loaded"),
            },
        ),
        ([], _deployment(2, 2, 1), "Pending", {"Progressing": ("True", "RollingOut")}),
        (
            [Problem("RuleCompileError", "rule 'x': bad", "RulesValid")],
            None,
            "Degraded",
            {
                "Ready": ("False", "RuleCompileError"),
                "RulesValid": ("False", "RuleCompileError"),
                "Degraded": ("True", "RuleCompileError"),
            },
        ),
        (
            [Problem("SecretMissing", "Secret s/x does not exist")],
            None,
            "Degraded",
            {"RulesValid": ("True", "Compiled"), "Degraded": ("True", "SecretMissing")},
        ),
    ],
)
def test_status_conditions(
    problems: list[Problem],
    deployment: dict[str, Any] | None,
    phase: str,
    expected: dict[str, tuple[str, str]],
) -> None:
    status = build_status(
        generation=3,
        problems=problems,
        deployment=deployment,
        model_version="m1",
        rules_version=None,
        previous=[],
        now="T1",
    )
    assert status["phase"] == phase
    assert status["observedGeneration"] == 3
    conds = _conds(status)
    assert set(conds) == {"Ready", "Progressing", "Degraded", "ModelReady", "RulesValid"}
    for kind, value in expected.items():
        assert conds[kind] == value
    assert all(c["message"] for c in status["conditions"])
    assert ("stableVersion" in status) == (not problems)


def test_last_transition_time_changes_only_on_flips() -> None:
    def status(generation: int, ready: int, previous: list[Any], now: str) -> dict[str, Any]:
        return build_status(
            generation=generation,
            problems=[],
            deployment=_deployment(1, ready, 1),
            model_version="m1",
            rules_version=None,
            previous=previous,
            now=now,
        )

    first = status(1, 0, [], "T1")
    same = status(2, 0, first["conditions"], "T2")
    assert {c["lastTransitionTime"] for c in same["conditions"]} == {"T1"}
    assert transitions(first["conditions"], same["conditions"]) == []
    flipped = status(2, 1, same["conditions"], "T3")
    by_type = {c["type"]: c for c in flipped["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == "T3"
    assert by_type["RulesValid"]["lastTransitionTime"] == "T1"
    assert {c["type"] for c in transitions(same["conditions"], flipped["conditions"])} == {
        "Ready",
        "Progressing",
        "ModelReady",
    }


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": {"b": [1, {"c": "x"}]}}, {"a": {"b": [1, {"c": "x", "d": 0}]}}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": "1"}, {"a": 1}, False),
        ({"a": 1}, {}, False),
        # The API server drops empty lists and maps (a container's env: []): not drift.
        ({"env": [], "args": ["x"]}, {"args": ["x"]}, True),
        ({"annotations": {}}, {}, True),
        ({"env": [{"name": "A"}]}, {}, False),
    ],
)
def test_is_subset(desired: Any, live: Any, expected: bool) -> None:
    assert is_subset(desired, live) is expected


def test_status_rules_version_is_the_one_scorers_report() -> None:
    from fraud_operator.validation import rules_version_of
    from fraud_scorer.config import DecisionSettings, RuleSpec
    from fraud_scorer.rules import compile_rules

    spec = _spec(decision={"reviewAt": 0.7, "blockAt": 0.9})
    compiled = compile_rules(
        [RuleSpec(name="big", expression="tx.amount > 1000.0")],
        DecisionSettings(review_at=0.7, block_at=0.9),
    )
    assert rules_version_of(spec) == compiled.version


DECLARED = {
    "historyHours": 72,
    "features": [
        {"name": "amount", "kind": "field", "field": "amount"},
        {"name": "devices_24h", "kind": "window", "agg": "distinct", "of": "device_id",
         "window": "24h"},
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("features", "rules", "reasons", "needle"),
    [
        (DECLARED, [{"name": "d", "expression": "features.devices_24h > 2"}], [], ""),
        (None, [{"name": "d", "expression": "features.devices_24h > 2"}], ["RuleCompileError"],
         "unknown feature 'devices_24h'"),
        (DECLARED, [{"name": "v", "expression": "features.tx_count_1h > 2"}],
         ["RuleCompileError"], "unknown feature 'tx_count_1h'"),
        ({"features": [{"name": "x", "kind": "window", "agg": "sum", "of": "merchant"}]}, [],
         ["InvalidFeatures"], "'merchant' is not one of the contract's numeric fields"),
        ({"features": [{"name": "m", "kind": "window", "agg": "count", "entity": "merchant"}]},
         [{"name": "m", "expression": "features.m > 20"}], [], ""),
        ({"features": [{"name": "r", "kind": "label", "agg": "fraud_rate", "window": "7d",
                        "delay": "7d", "entity": "merchant"}]},
         [], ["LabelsTopicMissing"], "r count analysts' verdicts: set spec.topics.labels"),
    ],
    ids=["declared", "v1-lacks-it", "declared-lacks-v1", "invalid", "entity", "labels"],
)  # fmt: skip
def test_declared_features_are_checked_and_rules_compile_against_them(
    features: dict[str, Any] | None, rules: list[dict[str, str]], reasons: list[str], needle: str
) -> None:
    problems = validate(_spec(features=features, rules=rules), "shop", {}, None)
    assert [p.reason for p in problems] == reasons
    assert all(needle in p.message for p in problems)
