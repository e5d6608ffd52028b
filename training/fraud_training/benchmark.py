"""The handbook benchmark: simulate its data, compute its 15 features, follow its protocol, and
compare our models with its published rows.

Each model family's hyper-parameters are chosen on earlier periods (the whole protocol shifted
back one and two weeks), as the handbook's prequential model selection does; the test week
never influences a choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraud_training import handbook as hb
from fraud_training import metrics as m
from fraud_training.models import Fitted, ModelKind, fit
from fraud_training.report import Row
from fraud_training.train import Fold, select_params

HANDBOOK = hb.HandbookConfig()
NAMES: dict[str, str] = {
    "random-forest": "random forest (ours)",
    "lightgbm": "LightGBM (ours)",
    "isolation-forest": "isolation forest (ours, unsupervised)",
}


@dataclass
class Period:
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int8]
    day: npt.NDArray[np.int64]
    card: npt.NDArray[np.int64]


@dataclass
class BenchmarkResult:
    rows: list[Row]
    fitted: dict[str, Fitted]
    data: dict[str, Any]


def _periods(tx: pd.DataFrame, feats: pd.DataFrame, weeks_back: int) -> tuple[Period, Period]:
    split = hb.split(tx, hb.TRAIN_START - timedelta(days=7 * weeks_back))

    def period(part: pd.DataFrame) -> Period:
        return Period(
            feats.loc[part.index].to_numpy(np.float32),
            part["TX_FRAUD"].to_numpy(np.int8),
            part["TX_TIME_DAYS"].to_numpy(np.int64),
            part["CUSTOMER_ID"].to_numpy(np.int64),
        )

    return period(split.train), period(split.test)


def run(
    cfg: hb.HandbookConfig = HANDBOOK,
    *,
    kinds: tuple[ModelKind, ...] = ("random-forest", "lightgbm", "isolation-forest"),
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> BenchmarkResult:
    progress("simulating the handbook's transactions")
    tx = hb.simulate(cfg)
    progress("computing the 15 handbook features")
    feats = hb.features(tx)
    train, test = _periods(tx, feats, 0)
    folds = [
        Fold(f_train.x, f_train.y, f_test.x, f_test.y)
        for f_train, f_test in (_periods(tx, feats, w) for w in (1, 2))
    ]
    rows = [Row(name, metrics, published=True) for name, metrics in hb.PUBLISHED.items()]
    fitted: dict[str, Fitted] = {}
    for kind in kinds:
        params, trials = select_params(
            kind,
            folds,
            feature_names=hb.FEATURES,
            seed=seed,
            progress=progress,
        )
        progress(f"{kind}: fitting on the training week")
        model = _fit(kind, train, params, seed)
        fitted[kind] = model
        scores = model.score(test.x)
        threshold = m.threshold_for_alert_rate(scores, 0.01)
        metrics = m.evaluate(test.y, scores, day=test.day, card=test.card, threshold=threshold)
        rows.append(
            Row(
                NAMES[kind],
                metrics,
                labels=test.y,
                scores=scores,
                extra={"params": params, "selection": [asdict(t) for t in trials]},
            )
        )
    data = {
        "transactions": len(tx),
        "frauds": int(tx["TX_FRAUD"].sum()),
        "fraud_rate": float(tx["TX_FRAUD"].mean()),
        "by_scenario": {int(k): int(v) for k, v in tx["TX_FRAUD_SCENARIO"].value_counts().items()},
        "train_rows": len(train.y),
        "train_frauds": int(train.y.sum()),
        "test_rows": len(test.y),
        "test_frauds": int(test.y.sum()),
        "config": {
            "customers": cfg.customers,
            "terminals": cfg.terminals,
            "days": cfg.days,
            "start": cfg.start.date().isoformat(),
            "seed": cfg.seed,
        },
    }
    return BenchmarkResult(rows, fitted, data)


def _fit(kind: ModelKind, period: Period, params: dict[str, Any], seed: int) -> Fitted:
    labels = None if kind == "isolation-forest" else period.y
    return fit(
        kind,
        period.x,
        labels,
        feature_names=hb.FEATURES,
        feature_set=hb.FEATURE_SET,
        params=params,
        seed=seed,
    )


def best(result: BenchmarkResult) -> Row:
    ours = [r for r in result.rows if not r.published]
    return max(ours, key=lambda r: r.metrics["average_precision"])
