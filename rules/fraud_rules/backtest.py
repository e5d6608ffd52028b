"""Rules and thresholds replayed over labelled history, through the scorer's own pipeline.

The features of every transaction are computed once, point-in-time, by training's replay
(:func:`fraud_training.data.replay_features`: the scorer's engines, and the entity stage's
aggregator for staged features, each row seeing only what came before it and the verdicts known
by then). Each rule set is then decided by :meth:`BatchScorer.process
<fraud_scorer.pipeline.BatchScorer.process>` itself, over the original messages and those rows:
the compiled rules, the model, the thresholds and the way they combine into an action are the
scorer's, so what a backtest says a rule would do is what a scorer with these rules does, with
an entity stage that is never behind (a live scorer's staged values lag by the stage's freshness,
docs/features.md).

Everything below :func:`decide` is arithmetic on what it returns: per rule and overall alerts,
alert rate, precision, recall, fraud amount caught and overlap, and the difference between two
rule sets decided on the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
from fraud_scorer.contract import Transaction
from fraud_scorer.feature_sets import FeatureSet
from fraud_scorer.model import Model
from fraud_scorer.pipeline import BatchScorer
from fraud_scorer.rules import RuleSet
from fraud_training.data import LABELLED_AT, replay_features, to_payloads

_BATCH = 5000
MODEL = "model"  # the reason a model-driven decision carries


class _Outcome(msgspec.Struct):
    """The part of a decision a backtest reads."""

    action: str
    reasons: list[str]


class _Message:
    """A history row as the pipeline reads a consumed Kafka message."""

    __slots__ = ("_ms", "_offset", "_value")

    def __init__(self, value: bytes, offset: int, ms: int) -> None:
        self._value, self._offset, self._ms = value, offset, ms

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "history"

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ms)

    def headers(self) -> None:
        return None


class _Replayed:
    """The engine a backtest gives the pipeline: it hands back, in order, the rows the replay
    already computed (point-in-time), instead of computing them again."""

    horizon_s = 0.0
    watermark = 0.0

    def __init__(self) -> None:
        self._rows: Any = iter(())

    def load(self, rows: list[list[float]]) -> None:
        self._rows = iter(rows)

    def compute(self, partition: int, tx: Any, ts: float) -> list[float]:
        return next(self._rows)  # type: ignore[no-any-return]

    def drop_partition(self, partition: int) -> None:
        pass

    def expire_idle(self) -> int:
        return 0

    def user_count(self) -> int:
        return 0


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
    rows: npt.NDArray[np.float64]  # features, the set's order
    features: FeatureSet
    replay_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)


def history_of(frame: pd.DataFrame, features: FeatureSet) -> History:
    """A validated labelled frame (:func:`fraud_training.data.validate`) with its features."""
    payloads = to_payloads(frame)
    labels = frame["label"].to_numpy(np.int8)
    labelled_at = None
    if LABELLED_AT in frame.columns:
        labelled_at = frame[LABELLED_AT].map(lambda t: t.timestamp()).to_numpy(float)
    started = time.perf_counter()
    replayed = replay_features(payloads, labels, features, labelled_at=labelled_at)
    return History(
        payloads=payloads,
        transactions=replayed.transactions,
        labels=labels,
        amounts=frame["amount"].to_numpy(np.float64),
        ts=replayed.ts,
        rows=replayed.rows,
        features=features,
        replay_seconds=time.perf_counter() - started,
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
    """Every row of ``history`` decided by the scorer's pipeline with ``ruleset`` and
    ``model``."""
    engine = _Replayed()
    scorer = BatchScorer(
        model=model,  # type: ignore[arg-type]
        ruleset=ruleset,
        engine=engine,
        detector="backtest",
        track="backtest",
        max_message_bytes=1 << 20,
        include_features=False,
        alerts=False,
        feature_names=history.features.names,
    )
    read = msgspec.json.Decoder(_Outcome).decode
    column = {rule.name: i for i, rule in enumerate(ruleset.rules)}
    n = len(history)
    actions = np.empty(n, dtype="<U6")
    hits = np.zeros((n, len(ruleset.rules)), dtype=bool)
    by_model = np.zeros(n, dtype=bool)
    ms = (history.ts * 1000).astype(np.int64).tolist()
    started = time.perf_counter()
    for start in range(0, n, batch):
        end = min(start + batch, n)
        engine.load(history.rows[start:end].tolist())
        messages = [_Message(history.payloads[i], i, ms[i]) for i in range(start, end)]
        result = scorer.process(messages)  # type: ignore[arg-type]
        if len(result.decisions) != end - start:  # history is validated: never happens
            raise RuntimeError(f"rows {start}-{end}: {len(result.dead_letters)} not decided")
        for i, (_, value) in enumerate(result.decisions, start):
            outcome = read(value)
            actions[i] = outcome.action
            for reason in outcome.reasons:
                if reason == MODEL:
                    by_model[i] = True
                else:
                    hits[i, column[reason]] = True
    return Decided(ruleset, actions, hits, by_model, time.perf_counter() - started)


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
