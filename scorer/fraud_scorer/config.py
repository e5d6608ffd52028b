"""The scorer's configuration: one frozen pydantic-settings model.

This module is the contract between the operator (which renders it into a ConfigMap) and the
scorer (which reads it). It imports nothing heavy so the operator can use it as well.

Sources, highest priority first: environment variables (``FRAUD_`` prefix, ``__`` between
levels, e.g. ``FRAUD_KAFKA__SASL_PASSWORD``), then the YAML file, then defaults. Credentials
are ``SecretStr`` and never appear in logs or ``repr``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from fraud_runtime.settings import (
    EnvFirstSettings,
    Frozen,
    KafkaSettings,
    MetricsSettings,
    load_settings_file,
)
from pydantic import Field, field_validator, model_validator

from fraud_scorer.feature_defs import FeatureSetDef, needs_stage

# The model artifact's digest: sha256 of its manifest.json (see fraud_scorer.model).
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


OBJECT_STORE_SCHEMES = ("s3", "gs")  # read with fsspec (extras s3, gcs) and workload identity


def model_uri_problem(uri: str, *, allow_http: bool = False) -> str | None:
    """Why a model URI is refused (None when it is fine); the message never echoes the URI,
    which may hold a credential. Shared by the fetch (init container, preflight Job) and the
    operator's validation, so a refused URI is reported before any pod starts."""
    import re
    import urllib.parse

    parts = urllib.parse.urlsplit(uri)
    allowed = ("https", "file", *OBJECT_STORE_SCHEMES) + (("http",) if allow_http else ())
    if parts.scheme not in allowed:
        if parts.scheme == "http":
            return (
                "the model URI is http://: the artifact would travel unencrypted; serve it "
                "over https:// or set allowHttp: true (its digest still pins the content)"
            )
        shown = parts.scheme if parts.scheme.isalnum() and len(parts.scheme) < 16 else "?"
        return f"unsupported model URI scheme {shown!r} (use https://, s3://, gs:// or file://)"
    if "@" in parts.netloc:
        return (
            "the model URI carries credentials, which would sit in the FraudDetector in clear; "
            "serve the artifact without them (its digest pins the content)"
        )
    if parts.query or parts.fragment:
        return "the model URI names a directory: no query string or fragment"
    if parts.scheme in OBJECT_STORE_SCHEMES and not re.fullmatch(
        r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", parts.netloc
    ):
        return (
            f"a {parts.scheme}:// model URI names a bucket, then the artifact's folder: "
            f"{parts.scheme}://BUCKET/PATH (the pod's workload identity supplies the credentials)"
        )
    return None


Action = Literal["review", "block"]
Track = Literal["stable", "canary", "shadow"]


class TopicSettings(Frozen):
    input: str = "transactions"
    decisions: str = "scored-transactions"
    alerts: str = "fraud-alerts"
    dead_letter: str = "transactions-dlq"
    # The entity stage's compacted table (staged features only): the scorer reads it whole.
    entity_features: str | None = None


class RuleSpec(Frozen):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$", max_length=63)
    expression: str = Field(min_length=1, max_length=4096)
    action: Action = "review"


class DecisionSettings(Frozen):
    review_at: float = Field(default=0.80, ge=0.0, le=1.0)
    block_at: float = Field(default=0.97, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> DecisionSettings:
        if self.review_at > self.block_at:
            raise ValueError(
                f"review_at ({self.review_at}) must not be above block_at ({self.block_at})"
            )
        return self


class FeatureSettings(Frozen):
    history_hours: float = Field(default=168.0, gt=0, description="per-user history horizon")
    max_events_per_user: int = Field(default=64, ge=2, le=4096)
    definitions: FeatureSetDef | None = Field(
        default=None,
        description="a declared feature set (docs/features.md); none: the shipped v1 set. "
        "Its own history_hours and max_events_per_entity then apply",
    )

    @model_validator(mode="after")
    def _one_horizon(self) -> FeatureSettings:
        if self.definitions is None:
            return self
        if self.history_hours != 168.0 or self.max_events_per_user != 64:
            raise ValueError(
                "with features.definitions, set history_hours and max_events_per_entity in "
                "the definitions, not here"
            )
        return self


class StateSettings(Frozen):
    replay: bool = True
    replay_max_messages: int = Field(
        default=2_000_000,
        ge=0,
        description="upper bound of messages replayed per assigned partition to rebuild state",
    )


class BatchSettings(Frozen):
    max_messages: int = Field(default=2000, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=0.01, gt=0, le=5)
    max_message_bytes: int = Field(default=65_536, ge=256)
    commit_interval_s: float = Field(default=1.0, gt=0)


ModelFallback = Literal["rules_only", "review"]


class ModelSettings(Frozen):
    path: Path = Path("/models/current")
    digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description="refuse to start unless the artifact at `path` has this digest",
    )
    on_error: ModelFallback = Field(
        default="rules_only",
        description="when the model fails on a batch: decide by the rules alone, or send every "
        "transaction of the batch to review; either way the reason includes 'model_error'",
    )


class OutputSettings(Frozen):
    include_features: bool = True
    alert_includes_transaction: bool = True
    carry_fields: tuple[str, ...] = Field(
        default=(),
        description="top-level input fields beyond the contract's that alerts carry (others are "
        "dropped); card numbers are masked in every carried value",
    )
    # A canary or shadow track leaves alerts (shadow) and dead letters (both) to stable: one
    # alert per transaction and one dead letter per bad message, whatever the tracks.
    alerts: bool = True
    dead_letters: bool = True


class SliceSettings(Frozen):
    """The users this track decides for: ``user_bucket(user_id)`` in ``[start, end)``.
    Every track still computes features for every user, so moving the boundary (a canary
    step) hands users over with warm state. Hot-reloaded from the config file."""

    start: int = Field(default=0, ge=0, le=100)
    end: int = Field(default=100, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> SliceSettings:
        if self.start > self.end:
            raise ValueError(f"slice.start ({self.start}) is above slice.end ({self.end})")
        return self

    def contains(self, bucket: int) -> bool:
        return self.start <= bucket < self.end


class ScorerSettings(EnvFirstSettings):
    """Everything one scorer process needs. Rendered by the operator as ``scorer.yaml``."""

    detector: str = "default"
    track: Track = "stable"
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    model: ModelSettings = ModelSettings()
    rules: tuple[RuleSpec, ...] = ()
    decision: DecisionSettings = DecisionSettings()
    features: FeatureSettings = FeatureSettings()
    state: StateSettings = StateSettings()
    batch: BatchSettings = BatchSettings()
    metrics: MetricsSettings = MetricsSettings()
    output: OutputSettings = OutputSettings()
    slice: SliceSettings = SliceSettings()
    reload_interval_s: float = Field(default=2.0, gt=0)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[RuleSpec, ...]) -> tuple[RuleSpec, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return rules

    @model_validator(mode="after")
    def _table_for_staged(self) -> ScorerSettings:
        defs = self.features.definitions
        staged = needs_stage(defs) if defs is not None else None
        if staged is not None and self.topics.entity_features is None:
            raise ValueError(
                f"features: {staged} come from the entity stage; set "
                "topics.entity_features to its table (docs/features.md)"
            )
        return self


def load_settings(path: Path | None, **overrides: Any) -> ScorerSettings:
    """Settings from the YAML file at ``path`` (if any) updated by ``overrides``; the
    environment still wins over both."""
    return load_settings_file(ScorerSettings, path, **overrides)


def read_reloadable(path: Path) -> tuple[tuple[RuleSpec, ...], DecisionSettings, SliceSettings]:
    """The hot-reloadable part of the config file: rules, thresholds and the user slice."""
    raw = yaml.safe_load(path.read_text()) or {}
    rules = tuple(RuleSpec.model_validate(r) for r in raw.get("rules") or ())
    ScorerSettings._unique_names(rules)
    decision = DecisionSettings.model_validate(raw.get("decision") or {})
    return rules, decision, SliceSettings.model_validate(raw.get("slice") or {})


def rules_version(rules: tuple[RuleSpec, ...], decision: DecisionSettings) -> str:
    """A short content hash of what the rule engine runs: same rules, same version."""
    payload = json.dumps(
        {"rules": [r.model_dump() for r in rules], "decision": decision.model_dump()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
