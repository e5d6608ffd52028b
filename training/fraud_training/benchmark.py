"""The handbook benchmark: simulate its data, compute its 15 features, follow its protocol, and
compare our models with its published rows.

The handbook's features include terminal risk from labels known after a delay, which a deployed
scorer cannot compute yet, so those rows are not what a deployed detector achieves. Beside
them, the **deployable** row trains on the features the scorer's own engine computes from the
same transactions in our contract (customer -> ``user_id``, terminal -> ``merchant``): the
shipped v1 set, or a declared one (``docs/features.md``).

Each model family's hyper-parameters are chosen on earlier periods (the whole protocol shifted
back one and two weeks), as the handbook's prequential model selection does; the test week
never influences a choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from fraud_scorer.feature_defs import FeatureSetDef, parse_feature_set

from fraud_training import handbook as hb
from fraud_training import metrics as m
from fraud_training.data import scorer_features
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
    deployable: bool = False,
    features: FeatureSetDef | None = None,
) -> BenchmarkResult:
    """With ``deployable``, add the deployable row: a random forest on the features the scorer
    and the entity stage compute (``features``, else :func:`handbook_features`)."""
    progress("simulating the handbook's transactions")
    tx = hb.simulate(cfg)
    progress("computing the 15 handbook features")
    feats = hb.features(tx)
    protocol = _Protocol.of(tx, feats)
    rows = [Row(name, metrics, published=True) for name, metrics in hb.PUBLISHED.items()]
    fitted: dict[str, Fitted] = {}
    for kind in kinds:
        row, fitted[kind] = protocol.model_row(
            kind, NAMES[kind], hb.FEATURES, hb.FEATURE_SET, seed, progress
        )
        rows.append(row)
    if deployable:
        row, model = _deployable(tx, features, seed, progress)
        rows.append(row)
        fitted["deployable"] = model
    data = {
        "transactions": len(tx),
        "frauds": int(tx["TX_FRAUD"].sum()),
        "fraud_rate": float(tx["TX_FRAUD"].mean()),
        "by_scenario": {int(k): int(v) for k, v in tx["TX_FRAUD_SCENARIO"].value_counts().items()},
        "train_rows": len(protocol.train.y),
        "train_frauds": int(protocol.train.y.sum()),
        "test_rows": len(protocol.test.y),
        "test_frauds": int(protocol.test.y.sum()),
        # What a perfect ranking would get: CP@100 is capped by compromised cards per day.
        "card_precision_at_100_ceiling": m.card_precision_at_k(
            protocol.test.day,
            protocol.test.card,
            protocol.test.y,
            protocol.test.y.astype(np.float64),
        ),
        "config": {
            "customers": cfg.customers,
            "terminals": cfg.terminals,
            "days": cfg.days,
            "start": cfg.start.date().isoformat(),
            "seed": cfg.seed,
        },
    }
    return BenchmarkResult(rows, fitted, data)


def as_contract(tx: pd.DataFrame) -> pd.DataFrame:
    """The handbook's transactions in our contract: a customer is a user (one device, one
    place), a terminal a merchant; labels as ``label``."""
    customer = tx["CUSTOMER_ID"].astype(str)
    return pd.DataFrame(
        {
            "transaction_id": "h" + tx["TRANSACTION_ID"].astype(str),
            "user_id": "c" + customer,
            "amount": tx["TX_AMOUNT"].astype(float),
            "currency": "EUR",
            "timestamp": tx["TX_DATETIME"].dt.tz_localize("UTC"),
            "merchant": "t" + tx["TERMINAL_ID"].astype(str),
            "merchant_category": "retail",
            "channel": "pos",
            "location": "FR",
            "device_id": "d" + customer,
            "label": tx["TX_FRAUD"].astype(np.int8),
        },
        index=tx.index,
    )


def handbook_features() -> FeatureSetDef:
    """``examples/features/handbook.yaml``: the handbook's kinds of feature, declared (the
    terminal's come from the entity stage, its risk from verdicts a week late)."""
    import yaml

    text = (Path(__file__).parent / "handbook_features.yaml").read_text()
    return parse_feature_set(yaml.safe_load(text))


def _deployable(
    tx: pd.DataFrame,
    definitions: FeatureSetDef | None,
    seed: int,
    progress: Callable[[str], None],
) -> tuple[Row, Fitted]:
    """A random forest on what the scorer computes, under the same protocol."""
    progress("computing the scorer's features (the deployable row)")
    definitions = definitions or handbook_features()
    data = scorer_features(as_contract(tx), definitions=definitions)
    feats = pd.DataFrame(data.x, index=tx.index, columns=list(data.feature_names))
    name = f"random forest (deployable: the scorer's {data.feature_set} features)"
    row, model = _Protocol.of(tx, feats).model_row(
        "random-forest", name, data.feature_names, data.feature_set, seed, progress
    )
    row.extra.update(deployable=True, feature_set=data.feature_set)
    return row, model


@dataclass
class _Protocol:
    """The handbook's protocol on one feature table: the training and test weeks, and the two
    earlier periods hyper-parameters are chosen on."""

    train: Period
    test: Period
    folds: list[Fold]

    @classmethod
    def of(cls, tx: pd.DataFrame, feats: pd.DataFrame) -> _Protocol:
        train, test = _periods(tx, feats, 0)
        folds = [
            Fold(f_train.x, f_train.y, f_test.x, f_test.y)
            for f_train, f_test in (_periods(tx, feats, w) for w in (1, 2))
        ]
        return cls(train, test, folds)

    def model_row(
        self,
        kind: ModelKind,
        name: str,
        feature_names: tuple[str, ...],
        feature_set: str,
        seed: int,
        progress: Callable[[str], None],
    ) -> tuple[Row, Fitted]:
        """Choose hyper-parameters, fit on the training week, measure on the test week."""
        params, trials = select_params(
            kind, self.folds, feature_names=feature_names, seed=seed, progress=progress
        )
        progress(f"{name}: fitting on the training week")
        model = fit(
            kind,
            self.train.x,
            None if kind == "isolation-forest" else self.train.y,
            feature_names=feature_names,
            feature_set=feature_set,
            params=params,
            seed=seed,
        )
        test = self.test
        scores = model.score(test.x)
        threshold = m.threshold_for_alert_rate(scores, 0.01)
        metrics = m.evaluate(test.y, scores, day=test.day, card=test.card, threshold=threshold)
        extra = {"params": params, "selection": [asdict(t) for t in trials]}
        return Row(name, metrics, labels=test.y, scores=scores, extra=extra), model


def best(result: BenchmarkResult) -> Row:
    """Our best row on the handbook's features."""
    ours = [r for r in result.rows if not r.published and not r.extra.get("deployable")]
    return max(ours, key=lambda r: r.metrics["average_precision"])


def deployable_row(result: BenchmarkResult) -> Row | None:
    """The row trained on what the scorer computes, if the run made one."""
    return next((r for r in result.rows if r.extra.get("deployable")), None)


def summary(result: BenchmarkResult) -> dict[str, Any]:
    """One line of the seed sweep: the data drawn and how our models did on it."""
    top = best(result)
    mine = deployable_row(result)
    return {
        "seed": result.data["config"]["seed"],
        "transactions": result.data["transactions"],
        "fraud_rate": result.data["fraud_rate"],
        "card_precision_at_100_ceiling": result.data["card_precision_at_100_ceiling"],
        "best": top.name,
        "best_average_precision": top.metrics["average_precision"],
        "best_card_precision_at_100": top.metrics["card_precision_at_100"],
        "deployable_average_precision": mine.metrics["average_precision"] if mine else None,
        "deployable_card_precision_at_100": mine.metrics["card_precision_at_100"] if mine else None,
        "models": {
            r.name: {k: r.metrics[k] for k in ("average_precision", "card_precision_at_100")}
            for r in result.rows
            if not r.published
        },
    }


def sweep(
    seeds: list[int],
    *,
    kinds: tuple[ModelKind, ...] = ("random-forest", "lightgbm"),
    progress: Callable[[str], None] = lambda _: None,
    deployable: bool = False,
    features: FeatureSetDef | None = None,
) -> list[dict[str, Any]]:
    """The benchmark on several simulator seeds: how much of a difference is sampling."""
    out = []
    for seed in seeds:

        def tagged(what: str, seed: int = seed) -> None:
            progress(f"seed {seed}: {what}")

        result = run(
            hb.HandbookConfig(seed=seed),
            kinds=kinds,
            seed=seed,
            progress=tagged,
            deployable=deployable,
            features=features,
        )
        out.append(summary(result))
    return out


def sweep_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Across simulator seeds",
        "",
        "| seed | transactions | fraud | CP@100 ceiling | best of ours | AP | CP@100 "
        "| deployable AP | deployable CP@100 |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines.extend(
        f"| {r['seed']} | {r['transactions']:,} | {r['fraud_rate']:.2%} "
        f"| {r['card_precision_at_100_ceiling']:.3f} | {r['best']} "
        f"| {r['best_average_precision']:.3f} | {r['best_card_precision_at_100']:.3f} "
        f"| {num(r.get('deployable_average_precision'))} "
        f"| {num(r.get('deployable_card_precision_at_100'))} |"
        for r in rows
    )

    def mean(key: str) -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        return f"{np.mean(values):.3f} ({np.std(values):.3f})" if values else "-"

    lines += [
        f"| mean (sd) | | | | | {mean('best_average_precision')} "
        f"| {mean('best_card_precision_at_100')} | {mean('deployable_average_precision')} "
        f"| {mean('deployable_card_precision_at_100')} |",
        "",
    ]
    return "\n".join(lines)
