"""Rules checked offline, with the scorer's own compiler: what passes here loads in a scorer
(and passes the operator's validation), so a GitOps pipeline can refuse a broken rule before
any cluster sees it.

A document is one of: a FraudDetector manifest (``kind: FraudDetector``: its rules, decision
thresholds and features, checked exactly as the operator checks them), a scorer config or a
rules file (a mapping with ``rules``, and optionally ``decision`` and ``features``), or a bare
list of rules. Other documents of a multi-document file (Secrets, KafkaTopics) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fraud_operator.spec import FraudDetectorSpec
from fraud_operator.validation import feature_set_of, parse_spec, scorer_rules
from fraud_scorer import feature_sets
from fraud_scorer.config import DecisionSettings, FeatureSettings, RuleSpec
from fraud_scorer.feature_sets import FeatureSet
from fraud_scorer.rules import RuleCompileError, RuleSet, compile_rules
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


@dataclass(frozen=True)
class Finding:
    """One thing wrong: where (``rule 'name', column 12``, ``decision.review_at``...) and
    what to change."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Checked:
    """One document's result: what it is, its rules, and the rules version a scorer would
    report (None when it does not compile)."""

    what: str
    rules: int
    version: str | None
    findings: tuple[Finding, ...]
    # What a scorer would run (when it compiles): the rules with their thresholds, and the
    # features they were compiled against.
    ruleset: RuleSet | None = field(default=None, compare=False)
    features: FeatureSet | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return not self.findings


def check_documents(docs: Iterable[Any], features: FeatureSet | None = None) -> list[Checked]:
    """Every rules-bearing document of a file, checked (``features``: the set to compile
    against when a document declares none; v1 otherwise)."""
    out = []
    for doc in docs:
        checked = check_document(doc, features)
        if checked is not None:
            out.append(checked)
    return out


def check_document(doc: Any, features: FeatureSet | None = None) -> Checked | None:
    if isinstance(doc, list):
        return _check_rules({"rules": doc}, "rules file", features)
    if not isinstance(doc, Mapping):
        return None
    if doc.get("kind") == "FraudDetector":
        meta = doc.get("metadata") or {}
        name = f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        return _check_detector(doc.get("spec") or {}, f"FraudDetector {name}")
    if "rules" in doc:
        return _check_rules(doc, "scorer config" if "kafka" in doc else "rules file", features)
    return None


def _check_detector(raw: Mapping[str, Any], what: str) -> Checked:
    spec = parse_spec(raw)
    if not isinstance(spec, FraudDetectorSpec):
        return Checked(what, len(raw.get("rules") or ()), None, _split(spec.message))
    features = feature_set_of(spec)
    if not isinstance(features, FeatureSet):
        return Checked(what, len(spec.rules), None, _split(features.message))
    try:
        rules, decision = scorer_rules(spec)
    except ValidationError as exc:
        found = tuple(Finding("spec.decision", err["msg"]) for err in exc.errors())
        return Checked(what, len(spec.rules), None, found)
    return _compile(what, rules, decision, features, prefix="spec.rules")


def _check_rules(raw: Mapping[str, Any], what: str, features: FeatureSet | None) -> Checked:
    """A scorer config's or rules file's rules, thresholds and features, each validated on
    its own (a wrong threshold does not hide a wrong rule), then compiled."""
    findings: list[Finding] = []

    def valid(model: type[T], key: str, default: T) -> T:
        try:
            return TypeAdapter(model).validate_python(raw.get(key, default))
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in (key, *err["loc"]))
                findings.append(Finding(where, err["msg"].removeprefix("Value error, ")))
            return default

    rules = valid(tuple[RuleSpec, ...], "rules", ())  # type: ignore[arg-type]
    decision = valid(DecisionSettings, "decision", DecisionSettings())
    f = valid(FeatureSettings, "features", FeatureSettings())
    if findings and not rules:
        return Checked(what, len(raw.get("rules") or ()), None, tuple(findings))
    chosen = features
    if "features" in raw or chosen is None:
        chosen = feature_sets.from_settings(f.definitions, f.history_hours, f.max_events_per_user)
    checked = _compile(what, rules, decision, chosen, prefix="rules")
    if not findings:
        return checked
    return Checked(what, checked.rules, None, (*findings, *checked.findings))


def _compile(
    what: str,
    rules: tuple[RuleSpec, ...],
    decision: DecisionSettings,
    features: FeatureSet,
    prefix: str,
) -> Checked:
    seen: set[str] = set()
    twice = []
    for rule in rules:
        if rule.name in seen:
            twice.append(Finding(f"rule '{rule.name}'", "the name is used twice"))
        seen.add(rule.name)
    try:
        ruleset = compile_rules(rules, decision, features)
    except RuleCompileError as exc:
        found = [
            Finding(f"rule '{p.rule}'" + (f", column {p.column}" if p.column else ""), p.message)
            for p in exc.problems
        ] or [Finding(prefix, str(exc))]
        return Checked(what, len(rules), None, (*twice, *found))
    if twice:
        return Checked(what, len(rules), None, tuple(twice))
    return Checked(what, len(rules), ruleset.version, (), ruleset, features)


def _split(message: str) -> tuple[Finding, ...]:
    """A validation message (``spec.x: what; spec.y: what``) as findings."""
    out = []
    for part in message.split("; "):
        where, sep, what = part.partition(": ")
        out.append(Finding(where, what) if sep else Finding("spec", part))
    return tuple(out)
