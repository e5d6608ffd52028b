"""Training runs: a time-ordered split with a delay period, model fitting (with optional
hyper-parameter selection on earlier data), threshold choice and evaluation.

The split follows the handbook's protocol: train on earlier days, skip a *delay period* (fraud
labels arrive late, so the freshest days cannot be trained on), test on the days after it.
Hyper-parameters are selected the same way one period earlier (the test period shifted back),
so the test days never influence the choice. The alert threshold is chosen on the test scores
for a target alert rate or false-positive rate and goes into the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from fraud_scorer.feature_defs import FeatureSetDef

from fraud_training import metrics as m
from fraud_training.data import Dataset, scorer_features, validate
from fraud_training.models import CANDIDATES, Fitted, ModelKind, fit
from fraud_training.onnx_export import export

_DAY_S: Final = 86400.0


@dataclass(frozen=True)
class SplitSpec:
    """Test on the last ``test_days``, after a ``delay_days`` gap; train on the ``train_days``
    before the gap (all of them if None)."""

    test_days: float = 2.0
    delay_days: float = 1.0
    train_days: float | None = None

    def masks(
        self, ts: npt.NDArray[np.float64], shift_days: float = 0.0
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        end = float(ts.max()) + 1.0 - shift_days * _DAY_S
        test_start = end - self.test_days * _DAY_S
        train_end = test_start - self.delay_days * _DAY_S
        train_start = -np.inf if self.train_days is None else train_end - self.train_days * _DAY_S
        train = (ts >= train_start) & (ts < train_end)
        test = (ts >= test_start) & (ts < end)
        return train, test


@dataclass(frozen=True)
class Target:
    """How to place the alert (review) threshold: at an alert rate, or at a false-positive rate
    (which needs labels). ``block_rate`` places the block threshold the same way."""

    alert_rate: float | None = 0.01
    fpr: float | None = None
    block_rate: float = 0.002

    def threshold(self, y: npt.NDArray[np.int8], scores: npt.NDArray[np.float64]) -> float:
        if self.fpr is not None:
            return m.threshold_for_fpr(y, scores, self.fpr)
        return m.threshold_for_alert_rate(scores, self.alert_rate or 0.01)


@dataclass
class TrainResult:
    fitted: Fitted
    train: Dataset
    test: Dataset
    scores: npt.NDArray[np.float64]
    review_at: float
    block_at: float
    metrics: dict[str, float]
    selection: list[Trial] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def days_of(ts: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.floor(ts / _DAY_S).astype(np.int64)


def evaluate_scores(
    test: Dataset, scores: npt.NDArray[np.float64], threshold: float
) -> dict[str, float]:
    return m.evaluate(test.y, scores, day=days_of(test.ts), card=test.card, threshold=threshold)


@dataclass(frozen=True)
class Fold:
    """One earlier period for hyper-parameter selection: fit on ``train``, judge on ``test``."""

    train_x: npt.NDArray[np.float32]
    train_y: npt.NDArray[np.int8]
    test_x: npt.NDArray[np.float32]
    test_y: npt.NDArray[np.int8]


@dataclass(frozen=True)
class Trial:
    params: dict[str, Any]
    validation_average_precision: float


def select_params(
    kind: ModelKind,
    folds: list[Fold],
    *,
    feature_names: tuple[str, ...],
    seed: int,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Any], list[Trial]]:
    """The candidate of :data:`~fraud_training.models.CANDIDATES` with the best mean average
    precision over ``folds`` (periods before the test period); the first one if there is
    nothing to choose from or no fold has frauds."""
    candidates = CANDIDATES[kind]
    usable = [f for f in folds if f.train_y.any() and f.test_y.any()]
    if len(candidates) == 1 or not usable:
        return candidates[0], []
    trials = []
    for params in candidates:
        progress(f"{kind}: validating {params}")
        aps = []
        for f in usable:
            labels = None if kind == "isolation-forest" else f.train_y
            model = fit(
                kind,
                f.train_x,
                labels,
                feature_names=feature_names,
                feature_set="selection",
                params=params,
                seed=seed,
            )
            aps.append(m.average_precision(f.test_y, model.score(f.test_x)))
        trials.append(Trial(params, float(np.mean(aps))))
    best = max(trials, key=lambda t: t.validation_average_precision)
    return best.params, trials


def earlier_folds(data: Dataset, split: SplitSpec, count: int = 2) -> list[Fold]:
    """The split shifted back by one, two... test periods."""
    folds = []
    for k in range(1, count + 1):
        train, test = split.masks(data.ts, shift_days=k * split.test_days)
        folds.append(Fold(data.x[train], data.y[train], data.x[test], data.y[test]))
    return folds


def train(
    data: Dataset,
    *,
    kind: ModelKind = "lightgbm",
    split: SplitSpec = SplitSpec(),
    target: Target = Target(),
    params: dict[str, Any] | None = None,
    select: bool = False,
    seed: int = 7,
    description: dict[str, Any] | None = None,
) -> TrainResult:
    train_mask, test_mask = split.masks(data.ts)
    train_set, test_set = data.take(train_mask), data.take(test_mask)
    if len(train_set) == 0 or len(test_set) == 0:
        raise ValueError(
            f"the split leaves {len(train_set)} training and {len(test_set)} test rows; the "
            "data must span more than train + delay + test days"
        )
    trials: list[Trial] = []
    if select and params is None:
        folds = earlier_folds(data, split)
        params, trials = select_params(kind, folds, feature_names=data.feature_names, seed=seed)
    labels = None if kind == "isolation-forest" else train_set.y
    fitted = fit(
        kind,
        train_set.x,
        labels,
        feature_names=data.feature_names,
        feature_set=data.feature_set,
        params=params,
        seed=seed,
    )
    if data.definitions is not None:
        fitted.extra["feature_definitions"] = data.definitions.model_dump(mode="json")
    scores = fitted.score(test_set.x)
    review_at = target.threshold(test_set.y, scores)
    block_at = max(m.threshold_for_alert_rate(scores, target.block_rate), review_at)
    metrics = evaluate_scores(test_set, scores, review_at)
    info = {
        **(description or {}),
        "rows": len(data),
        "fraud_rate": float(data.y.mean()),
        "train_rows": len(train_set),
        "train_frauds": int(train_set.y.sum()),
        "test_rows": len(test_set),
        "test_frauds": int(test_set.y.sum()),
        "split": {
            "test_days": split.test_days,
            "delay_days": split.delay_days,
            "train_days": split.train_days,
        },
    }
    return TrainResult(
        fitted, train_set, test_set, scores, review_at, block_at, metrics, trials, info
    )


@dataclass
class TrainReport:
    """What the demo, the benchmark and tests need from one train-and-export run."""

    model_dir: Path
    metrics: dict[str, float]
    review_at: float
    block_at: float


def export_result(result: TrainResult, out_dir: Path, *, version: str) -> dict[str, Any]:
    return export(
        result.fitted,
        out_dir,
        version=version,
        holdout=result.test.x,
        threshold=result.review_at,
        metrics={**result.metrics, "block_at": result.block_at},
        data=result.data,
    )


def train_and_export(
    frame: pd.DataFrame,
    out_dir: Path,
    *,
    version: str,
    kind: ModelKind = "lightgbm",
    split: SplitSpec | None = None,
    target: Target = Target(),
    definitions: FeatureSetDef | None = None,
) -> TrainReport:
    """Validate a labelled frame, compute scorer features (of ``definitions``, else v1), train,
    export a verified artifact. Without a ``split``, the last 30% of the time span is the test
    period (no delay)."""
    frame = validate(frame)
    data = scorer_features(frame, definitions=definitions)
    if split is None:
        span_days = float(data.ts.max() - data.ts.min()) / _DAY_S
        split = SplitSpec(test_days=span_days * 0.3, delay_days=0.0)
    result = train(data, kind=kind, split=split, target=target)
    export_result(result, out_dir, version=version)
    return TrainReport(out_dir, result.metrics, result.review_at, result.block_at)
