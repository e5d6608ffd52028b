"""The model families we train, behind one small interface: fit on a feature matrix, return a
fraud score in [0, 1] per row.

- ``lightgbm``: gradient-boosted trees; class imbalance through ``scale_pos_weight``.
- ``random-forest``: scikit-learn; imbalance through ``class_weight`` where selected.
- ``isolation-forest``: unsupervised, for data without labels: the score is the forest's
  anomaly score ``2 ** (-E[path length] / c(n))`` (higher = more anomalous); labels, when
  present, are only used to evaluate it.

Tree thresholds are snapped to float32 after fitting (the largest float32 not above each
threshold). Features are float32 in training and serving, so for every possible input the
snapped model takes the same branches as the fitted one - and the float32 ONNX graph takes the
same branches as the native model, which is what makes the export's 1e-5 parity hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.ensemble import IsolationForest, RandomForestClassifier

ModelKind = Literal["lightgbm", "random-forest", "isolation-forest"]
MODEL_KINDS: Final = get_args(ModelKind)

# Hyper-parameter candidates per family; ``fit`` takes one, ``select`` picks among them on
# earlier data. The first is the default.
CANDIDATES: Final[dict[str, list[dict[str, Any]]]] = {
    "lightgbm": [
        {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 8, "max_depth": 3},
        {"n_estimators": 300, "learning_rate": 0.03, "num_leaves": 15, "min_child_samples": 20},
        {
            "n_estimators": 400,
            "learning_rate": 0.02,
            "num_leaves": 31,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
        },
    ],
    "random-forest": [
        {"n_estimators": 100, "max_depth": 20},
        {"n_estimators": 200, "max_depth": 12, "class_weight": "balanced_subsample"},
        {"n_estimators": 200, "min_samples_leaf": 3},
    ],
    "isolation-forest": [{"n_estimators": 200, "max_samples": 256}],
}


def floor_to_float32(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The largest float32 not above each value (as float64): ``x <= t`` and
    ``x <= floor_to_float32(t)`` agree for every float32 ``x``."""
    rounded = values.astype(np.float32)
    above = rounded.astype(np.float64) > values
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded.astype(np.float64)


@dataclass
class Fitted:
    """A fitted model and what is needed to score, export and describe it."""

    kind: ModelKind
    estimator: Any
    params: dict[str, Any]
    feature_names: tuple[str, ...]
    feature_set: str
    extra: dict[str, Any] = field(default_factory=dict)

    def score(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Fraud score of each row, in [0, 1]."""
        if self.kind == "isolation-forest":
            out: npt.NDArray[np.float64] = -self.estimator.score_samples(x)
            return out
        return np.asarray(self.estimator.predict_proba(x), dtype=np.float64)[:, 1]

    @property
    def framework(self) -> str:
        if self.kind == "lightgbm":
            return f"lightgbm {lgb.__version__}"
        import sklearn

        return f"scikit-learn {sklearn.__version__}"


def fit(
    kind: ModelKind,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8] | None,
    *,
    feature_names: tuple[str, ...],
    feature_set: str,
    params: dict[str, Any] | None = None,
    seed: int = 7,
    threads: int = 2,
) -> Fitted:
    """Fit one model family; ``y`` may be None only for ``isolation-forest``."""
    chosen = dict(CANDIDATES[kind][0] if params is None else params)
    if kind == "isolation-forest":
        estimator: Any = IsolationForest(random_state=seed, n_jobs=threads, **chosen).fit(x)
        _snap_sklearn_trees(estimator)
    else:
        if y is None or len(np.unique(y)) < 2:
            raise ValueError(f"{kind} needs labels with both classes; use isolation-forest")
        if kind == "lightgbm":
            estimator = _fit_lightgbm(x, y, chosen, seed, threads)
        else:
            estimator = RandomForestClassifier(random_state=seed, n_jobs=threads, **chosen)
            estimator.fit(x, y)
            _snap_sklearn_trees(estimator)
    return Fitted(kind, estimator, chosen, feature_names, feature_set)


def _fit_lightgbm(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    params: dict[str, Any],
    seed: int,
    threads: int,
) -> lgb.LGBMClassifier:
    pos = max(int(y.sum()), 1)
    defaults = {"scale_pos_weight": min(5.0, (len(y) - pos) / pos)}
    model = lgb.LGBMClassifier(
        **{**defaults, **params}, random_state=seed, n_jobs=threads, verbose=-1
    )
    model.fit(x, y)
    model._Booster = _snap_booster(model.booster_)
    return model


def _snap_booster(booster: lgb.Booster) -> lgb.Booster:
    # ``tree_sizes`` gives byte offsets that the new thresholds change; without it LightGBM
    # parses the trees one after another.
    lines = [
        line
        for line in booster.model_to_string().splitlines()
        if not line.startswith("tree_sizes=")
    ]
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            values = np.array(line.removeprefix("threshold=").split(), dtype=np.float64)
            snapped = floor_to_float32(values)
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in snapped)
    return lgb.Booster(model_str="\n".join(lines) + "\n")


def _snap_sklearn_trees(forest: RandomForestClassifier | IsolationForest) -> None:
    for tree in forest.estimators_:
        thresholds = tree.tree_.threshold
        split = tree.tree_.children_left >= 0
        thresholds[split] = floor_to_float32(thresholds[split])
