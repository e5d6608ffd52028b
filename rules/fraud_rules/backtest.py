"""Rules and thresholds replayed over labelled history, through the scorer's own pipeline.

The features of every transaction are computed once, point-in-time, by training's replay
(:func:`fraud_training.data.replay_features`: the scorer's engines, and the entity stage's
aggregator for staged features, each row seeing only what came before it and the verdicts known
by then). Each rule set is then decided over those rows by the scorer's own parts: the compiled
rules, the model, and :func:`fraud_scorer.pipeline.judge`, which turns matches and a score into
an action in every scorer. What a backtest says a rule would do is what a scorer with these
rules does (``tests/rules/test_backtest.py`` holds them equal to ``BatchScorer.process`` row for
row), with an entity stage that is never behind (a live scorer's staged values lag by the
stage's freshness, docs/features.md). No message is encoded or decoded twice: the decisions'
JSON is the only part of the scorer's work a backtest skips.

Or the features come from the decisions the scorers published (:func:`served_rows`: every
decision carries the values its rules and model read): the backtest then decides on the very
values the live scorer had, freshness and all, and the current rules reproduce the live
decisions exactly.

Everything below :func:`decide` is arithmetic on what it returns: per rule and overall alerts,
alert rate, precision, recall, fraud amount caught and overlap, and the difference between two
rule sets decided on the same rows.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
from fraud_scorer.contract import Transaction
from fraud_scorer.feature_sets import FeatureSet
from fraud_scorer.model import Model
from fraud_scorer.pipeline import MODEL, judge
from fraud_scorer.rules import RuleSet
from fraud_training.data import LABELLED_AT, replay_features, to_payloads

_BATCH = 5000


class RulesOnly:
    """No model: every decision comes from the rules (a score of -1 is below any threshold)."""

    version = "none"

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.full(len(rows), -1.0, dtype=np.float32)


@dataclass(frozen=True)
class History:
    """Labelled transactions with their point-in-time features, in time order."""

    payloads: Sequence[bytes]
    transactions: Sequence[Transaction]  # the payloads decoded
    labels: npt.NDArray[np.int8]  # 1 = fraud
    amounts: npt.NDArray[np.float64]
    ts: npt.NDArray[np.float64]  # epoch seconds
    rows: list[list[float]]  # features (float64), the set's order: what the rules read
    features: FeatureSet
    replay_seconds: float = 0.0
    served: bool = False  # the features are the ones the scorers had, from their decisions

    def __len__(self) -> int:
        return len(self.labels)


class ServedError(ValueError):
    """Served decisions that cannot stand in for the history's features."""


class _Served(msgspec.Struct):
    transaction_id: str
    features: dict[str, float | None] | None = None


def served_rows(
    decisions: Iterable[bytes], transactions: Sequence[Transaction], features: FeatureSet
) -> list[list[float]]:
    """Each transaction's features as its scorer had them, from the decisions it published
    (JSON lines, as on the decisions topic; the last decision of a transaction wins). Every
    transaction needs one, carrying every feature of the set (``output.include_features``,
    on by default)."""
    wanted = {tx.transaction_id for tx in transactions}
    names = features.names
    found: dict[str, dict[str, float | None]] = {}
    decode = msgspec.json.Decoder(_Served).decode
    for n, line in enumerate(decisions, 1):
        if not line.strip():
            continue
        try:
            d = decode(line)
        except msgspec.DecodeError as exc:
            raise ServedError(f"decision {n} is not a decision: {exc}") from exc
        if d.transaction_id not in wanted:
            continue
        if d.features is None or any(name not in d.features for name in names):
            raise ServedError(
                f"the decision of {d.transaction_id} does not carry every feature of set "
                f"{features.version} (served by another set, or output.include_features off)"
            )
        found[d.transaction_id] = d.features
    missing = [tx.transaction_id for tx in transactions if tx.transaction_id not in found]
    if missing:
        raise ServedError(
            f"{len(missing):,} of {len(transactions):,} transactions have no served decision "
            f"(the first: {missing[0]})"
        )
    nan = float("nan")
    return [
        [nan if (v := found[tx.transaction_id][name]) is None else v for name in names]
        for tx in transactions
    ]


def history_of(
    frame: pd.DataFrame, features: FeatureSet, served: Iterable[bytes] | None = None
) -> History:
    """A validated labelled frame (:func:`fraud_training.data.validate`) with its features:
    replayed point-in-time, or ``served`` (decisions, see :func:`served_rows`)."""
    payloads = to_payloads(frame)
    labels = frame["label"].to_numpy(np.int8)
    labelled_at = None
    if LABELLED_AT in frame.columns:
        labelled_at = frame[LABELLED_AT].map(lambda t: t.timestamp()).to_numpy(float)
    started = time.perf_counter()
    replayed = replay_features(payloads, labels, features, labelled_at=labelled_at)
    if served is None:
        rows = list(replayed.rows)
    else:  # the replay's rows are lazy: never computed
        rows = served_rows(served, replayed.transactions, features)
    seconds = time.perf_counter() - started
    return History(
        payloads=payloads,
        transactions=replayed.transactions,
        labels=labels,
        amounts=frame["amount"].to_numpy(np.float64),
        ts=replayed.ts,
        rows=rows,
        features=features,
        replay_seconds=seconds,
        served=served is not None,
    )


@dataclass(frozen=True)
class Decided:
    """One rule set's decisions over a history."""

    ruleset: RuleSet
    actions: npt.NDArray[np.str_]
    hits: npt.NDArray[np.bool_]  # rows x rules: which rules matched
    model: npt.NDArray[np.bool_]  # the model's score reached a threshold
    seconds: float

    @property
    def alerted(self) -> npt.NDArray[np.bool_]:
        return self.actions != "allow"  # type: ignore[no-any-return]


def decide(
    history: History, ruleset: RuleSet, model: Model | RulesOnly, batch: int = _BATCH
) -> Decided:
    """Every row of ``history`` decided with ``ruleset`` and ``model`` by the scorer's own
    :func:`~fraud_scorer.pipeline.judge`, in batches as a scorer would score them."""
    column = {rule.name: i for i, rule in enumerate(ruleset.rules)}
    n = len(history)
    actions: list[str] = []
    hits = np.zeros((n, len(ruleset.rules)), dtype=bool)
    by_model = np.zeros(n, dtype=bool)
    errors, counted = [0] * len(ruleset.rules), Counter[str]()
    started = time.perf_counter()
    for start in range(0, n, batch):
        rows = history.rows[start : start + batch]
        scores = model.score(np.array(rows, dtype=np.float32)).tolist()
        txs = history.transactions[start : start + batch]
        done, reasons = judge(ruleset, txs, rows, scores, errors, counted)
        actions += done
        for i, why in enumerate(reasons, start):
            for reason in why:
                if reason == MODEL:
                    by_model[i] = True
                else:
                    hits[i, column[reason]] = True
    seconds = time.perf_counter() - started
    return Decided(ruleset, np.array(actions, dtype="<U6"), hits, by_model, seconds)


# -- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Alerts of one rule (or of all decisions) against the labels."""

    alerts: int
    alert_rate: float
    precision: float | None  # None: no alert
    recall: float | None  # None: no fraud in the history
    fraud_caught: int
    fraud_amount: float  # the amount of the fraud caught


def figures(mask: npt.NDArray[np.bool_], history: History) -> Figures:
    fraud = history.labels == 1
    caught = mask & fraud
    alerts, frauds, tp = int(mask.sum()), int(fraud.sum()), int(caught.sum())
    return Figures(
        alerts=alerts,
        alert_rate=alerts / len(history) if len(history) else 0.0,
        precision=tp / alerts if alerts else None,
        recall=tp / frauds if frauds else None,
        fraud_caught=tp,
        fraud_amount=round(float(history.amounts[caught].sum()), 2),
    )


@dataclass(frozen=True)
class RuleReport:
    name: str
    action: str
    figures: Figures
    only: int  # alerts no other rule (nor the model) raised
    overlap: dict[str, int]  # alerts shared with each other rule


@dataclass(frozen=True)
class Diff:
    """What changes from the current rule set to the candidate, on the same rows."""

    new_catches: int  # fraud alerted by the candidate only
    new_catches_amount: float
    lost_catches: int  # fraud alerted by the current rules only
    lost_catches_amount: float
    extra_false_positives: int  # legitimate rows alerted by the candidate only
    fewer_false_positives: int  # legitimate rows alerted by the current rules only
    actions_changed: int  # rows whose action differs
    current: Figures


@dataclass(frozen=True)
class Report:
    rows: int
    frauds: int
    fraud_amount: float
    rules_version: str
    features_from: str  # "replayed" point-in-time, or "served" (the scorers' own values)
    overall: Figures
    by_action: dict[str, int]
    model: Figures
    rules: list[RuleReport]
    seconds: dict[str, float] = field(default_factory=dict)
    against: Diff | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def report(history: History, decided: Decided, current: Decided | None = None) -> Report:
    hits = decided.hits
    names = [rule.name for rule in decided.ruleset.rules]
    raised = hits.sum(axis=1) + decided.model  # how many rules (and the model) alerted a row
    shared = hits.T.astype(np.int64) @ hits.astype(np.int64)  # rules x rules: rows both hit
    rules = [
        RuleReport(
            name=name,
            action=rule.action,
            figures=figures(hits[:, i], history),
            only=int((hits[:, i] & (raised == 1)).sum()),
            overlap={
                other: int(shared[i, j]) for j, other in enumerate(names) if j != i and shared[i, j]
            },
        )
        for i, (name, rule) in enumerate(zip(names, decided.ruleset.rules, strict=True))
    ]
    actions, counts = np.unique(decided.actions, return_counts=True)
    replay = history.replay_seconds
    seconds = {
        "features": round(replay, 3),
        "decisions": round(decided.seconds, 3),
        "rows_per_s": round(len(history) / (replay + decided.seconds), 1),
        "decisions_rows_per_s": round(len(history) / decided.seconds, 1),
    }
    return Report(
        rows=len(history),
        frauds=int((history.labels == 1).sum()),
        fraud_amount=round(float(history.amounts[history.labels == 1].sum()), 2),
        rules_version=decided.ruleset.version,
        features_from="served" if history.served else "replayed",
        overall=figures(decided.alerted, history),
        by_action={str(a): int(c) for a, c in zip(actions, counts, strict=True)},
        model=figures(decided.model, history),
        rules=rules,
        seconds=seconds,
        against=None if current is None else diff(history, decided, current),
    )


def diff(history: History, candidate: Decided, current: Decided) -> Diff:
    fraud = history.labels == 1
    new, old = candidate.alerted, current.alerted
    gained, lost = new & ~old & fraud, old & ~new & fraud
    return Diff(
        new_catches=int(gained.sum()),
        new_catches_amount=round(float(history.amounts[gained].sum()), 2),
        lost_catches=int(lost.sum()),
        lost_catches_amount=round(float(history.amounts[lost].sum()), 2),
        extra_false_positives=int((new & ~old & ~fraud).sum()),
        fewer_false_positives=int((old & ~new & ~fraud).sum()),
        actions_changed=int((candidate.actions != current.actions).sum()),
        current=figures(old, history),
    )
