"""Checks a FraudDetector must pass before anything is created or changed: a chain of pure
functions, each returning ``None`` or a :class:`Problem` a person can act on.

A failing check leaves the running children as they are (the last good configuration keeps
scoring) and is reported in status and as an Event; it never crash-loops the operator.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fraud_scorer import feature_sets
from fraud_scorer.config import DecisionSettings, RuleSpec, model_uri_problem
from fraud_scorer.feature_defs import LabelFeature, parse_feature_set
from fraud_scorer.feature_sets import FeatureSet
from fraud_scorer.rules import RuleCompileError, compile_rules
from pydantic import ValidationError

from fraud_operator.spec import PROJECT_IMAGES, DefaultImages, FraudDetectorSpec, Rulebook


@dataclass(frozen=True)
class Problem:
    """Why a FraudDetector cannot be reconciled. ``condition`` is the status condition it sets
    to False besides Ready (e.g. RulesValid)."""

    reason: str
    message: str
    condition: str | None = None


def parse_spec(raw: Mapping[str, Any]) -> FraudDetectorSpec | Problem:
    try:
        return FraudDetectorSpec.model_validate(raw)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            parts.append(f"spec.{where}: {err['msg']}" if where else f"spec: {err['msg']}")
        return Problem("InvalidSpec", "; ".join(parts))


def scorer_rules(spec: FraudDetectorSpec) -> tuple[tuple[RuleSpec, ...], DecisionSettings]:
    return Rulebook.of(spec).for_scorer()


def feature_set_of(spec: FraudDetectorSpec) -> FeatureSet | Problem:
    """The set the scorers will compute (``spec.features``, else v1), checked as the scorer
    checks it; the message names each wrong field and never repeats its value."""
    if spec.features is None:
        return feature_sets.V1
    try:
        defs = parse_feature_set(spec.features)
    except ValidationError as exc:
        parts = [
            f"spec.features.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        ]
        return Problem("InvalidFeatures", "; ".join(parts[:5]))
    labels = [f.name for f in defs.staged() if isinstance(f, LabelFeature)]
    if labels and spec.topics.labels is None:
        return Problem(
            "LabelsTopicMissing",
            f"spec.features: {', '.join(labels)} count analysts' verdicts: set "
            "spec.topics.labels to the topic they are published on",
        )
    return feature_sets.declared(defs)


def check_rules(
    spec: FraudDetectorSpec, features: FeatureSet | Problem | None = None
) -> Problem | None:
    """Compile the rules with the scorer's own compiler, against the features the scorers
    will compute (``features``: :func:`feature_set_of`, found once per pass): what passes
    here loads there."""
    features = feature_set_of(spec) if features is None else features
    if isinstance(features, Problem):
        return None  # reported as the features' own problem
    try:
        compile_rules(*scorer_rules(spec), features)
    except RuleCompileError as exc:
        return Problem("RuleCompileError", str(exc), "RulesValid")
    return None


# The images a FraudDetector may run when the operator is not told otherwise (--allowed-image,
# the chart's operator.allowedImages): the project's own.
DEFAULT_ALLOWED_IMAGES = ("ghcr.io/fraud-detector/*",)


def check_images(
    spec: FraudDetectorSpec, allowed: tuple[str, ...], defaults: DefaultImages = PROJECT_IMAGES
) -> Problem | None:
    """The FraudDetector's author may pick the scorer, sink and console images; the platform
    team decides which may run (they get the Kafka credentials and the case store's DSNs).
    The operator's own defaults always may."""
    trusted = {defaults.scorer, defaults.console}
    for image in defaults.of(spec).values():
        if image in trusted:
            continue
        if not any(fnmatch.fnmatchcase(image, pattern) for pattern in allowed):
            return Problem(
                "ImageNotAllowed",
                f"image {image!r} is not one this operator runs (allowed: {', '.join(allowed)}); "
                "use an allowed image or ask the platform team to allow it "
                "(the chart's operator.allowedImages)",
            )
    return None


def check_transport(spec: FraudDetectorSpec) -> Problem | None:
    """SASL PLAIN sends the password itself: only inside TLS. (SCRAM sends a proof, never the
    password.) Checked before the operator's own partition probe uses the credentials."""
    auth = spec.kafka.authentication
    if auth is not None and auth.type == "plain" and spec.kafka.tls is None:
        return Problem(
            "PlaintextCredentials",
            "kafka.authentication.type plain sends the password in clear without kafka.tls: "
            "add kafka.tls (`tls: {}` for brokers with a public certificate) or use scram-sha-512",
        )
    return None


def check_model(spec: FraudDetectorSpec) -> Problem | None:
    """The fetch's own URI policy (https, no credentials), before any pod tries it."""
    problem = model_uri_problem(spec.model.uri, allow_http=spec.model.allow_http)
    return Problem("ModelUriRefused", problem, "ModelReady") if problem else None


def rules_version_of(spec: FraudDetectorSpec) -> str:
    """The version the scorers report for these rules (``fraud_rules_info``, decisions)."""
    return Rulebook.of(spec).version


def required_secrets(spec: FraudDetectorSpec) -> dict[str, set[str]]:
    """Secret name -> keys the scorer, sink and console pods will read."""
    wanted: dict[str, set[str]] = {}
    auth, tls = spec.kafka.authentication, spec.kafka.tls
    if auth is not None:
        ref = auth.password_secret
        wanted.setdefault(ref.secret_name, set()).add(ref.password)
    if tls is not None:
        for cert in tls.trusted_certificates:
            wanted.setdefault(cert.secret_name, set()).add(cert.certificate)
        if (client := tls.client_certificate) is not None:
            wanted.setdefault(client.secret_name, set()).update((client.certificate, client.key))
    sinks = spec.sinks
    if sinks is not None:
        for sink_ref in (
            sinks.webhook.url_secret if sinks.webhook else None,
            sinks.postgres.dsn_secret if sinks.postgres else None,
            sinks.postgres.migration_dsn_secret if sinks.postgres else None,
        ):
            if sink_ref is not None:
                wanted.setdefault(sink_ref.secret_name, set()).add(sink_ref.key)
    console = spec.console
    if console is not None:
        refs = [console.dsn_secret, console.session_secret]
        refs += [console.users_secret] if console.auth == "builtin" and console.users_secret else []
        for console_ref in refs:
            wanted.setdefault(console_ref.secret_name, set()).add(console_ref.key)
    return wanted


def check_secrets(
    spec: FraudDetectorSpec, namespace: str, found: Mapping[str, set[str] | None]
) -> Problem | None:
    """``found`` maps each required Secret to its keys (None when it does not exist)."""
    for name, keys in sorted(required_secrets(spec).items()):
        have = found.get(name)
        if have is None:
            return Problem(
                "SecretMissing",
                f"Secret {namespace}/{name} does not exist; create it with the key(s) "
                f"{', '.join(sorted(keys))}",
            )
        missing = sorted(keys - have)
        if missing:
            return Problem(
                "SecretKeyMissing",
                f"Secret {namespace}/{name} has no key(s) {', '.join(missing)} "
                f"(it has {', '.join(sorted(have)) or 'none'})",
            )
    return None


def check_partitions(spec: FraudDetectorSpec, partitions: int | None) -> Problem | None:
    """More consumers than partitions would sit idle: refuse when the count is known."""
    if partitions is not None and spec.scaling.max_replicas > partitions:
        return Problem(
            "TooManyReplicas",
            f"scaling.maxReplicas is {spec.scaling.max_replicas} but topic "
            f"{spec.topics.input!r} has {partitions} partition(s): the extra scorers would get "
            f"no partition; lower maxReplicas to {partitions} or add partitions",
        )
    return None


def validate(
    spec: FraudDetectorSpec,
    namespace: str,
    secrets: Mapping[str, set[str] | None],
    partitions: int | None,
    allowed_images: tuple[str, ...] = DEFAULT_ALLOWED_IMAGES,
    default_images: DefaultImages = PROJECT_IMAGES,
) -> list[Problem]:
    features = feature_set_of(spec)
    checks = (
        features if isinstance(features, Problem) else None,
        check_rules(spec, features),
        check_transport(spec),
        check_images(spec, allowed_images, default_images),
        check_model(spec),
        check_secrets(spec, namespace, secrets),
        check_partitions(spec, partitions),
    )
    return [p for p in checks if p is not None]
