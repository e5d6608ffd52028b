"""The handbook re-implementation: simulator properties, features by hand, the protocol, and the
benchmark reaching the published random-forest row."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fraud_training import benchmark, report
from fraud_training import handbook as hb

DAY = 86400


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return hb.simulate(hb.HandbookConfig(customers=600, terminals=1200, days=60, seed=3))


def test_simulator_follows_the_published_process(small: pd.DataFrame) -> None:
    assert small["TX_DATETIME"].is_monotonic_increasing
    seconds = small["TX_TIME_SECONDS"] % DAY
    assert ((seconds > 0) & (seconds < DAY)).all()
    assert (small["TX_TIME_SECONDS"] // DAY == small["TX_TIME_DAYS"]).all()
    assert (small["TX_AMOUNT"] >= 0).all()
    # Scenario 1: every amount above 220 is fraud; scenario-1 frauds are exactly those left.
    assert small.loc[small["TX_AMOUNT"] > 220, "TX_FRAUD"].eq(1).all()
    assert (small.loc[small["TX_FRAUD_SCENARIO"] == 1, "TX_AMOUNT"] > 220).all()
    # Scenario 2: a compromised terminal's frauds all fall within 28 days of one another
    # start, and all its transactions in that window are fraud.
    s2 = small[small["TX_FRAUD_SCENARIO"] == 2]
    assert s2["TERMINAL_ID"].nunique() <= 2 * 60
    # Scenario 3: amounts of compromised customers' frauds are 5x their usual spend.
    s3 = small[small["TX_FRAUD_SCENARIO"] == 3]
    usual = small[small["TX_FRAUD"] == 0].groupby("CUSTOMER_ID")["TX_AMOUNT"].median()
    ratio = (s3.groupby("CUSTOMER_ID")["TX_AMOUNT"].median() / usual).dropna()
    assert ratio.median() == pytest.approx(5, rel=0.3)
    # A customer pays at a handful of nearby terminals, not all over the grid.
    assert small.groupby("CUSTOMER_ID")["TERMINAL_ID"].nunique().max() < 60


def _tx(rows: list[tuple[str, int, int, float, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["when", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]
    )
    when = pd.to_datetime(frame.pop("when"))
    frame.insert(0, "TX_DATETIME", when)
    since_start = (when - pd.Timestamp("2018-04-01")).dt.total_seconds()
    frame["TX_TIME_SECONDS"] = since_start.astype(np.int64)
    frame["TX_TIME_DAYS"] = frame["TX_TIME_SECONDS"] // DAY
    return frame


def test_features_by_hand() -> None:
    tx = (
        _tx(
            [
                ("2018-04-01 10:00", 1, 7, 10.0, 1),  # Sunday
                ("2018-04-01 20:00", 1, 7, 30.0, 0),
                ("2018-04-02 09:00", 1, 8, 50.0, 0),  # 23 h after the first: inside 1 day
                ("2018-04-02 05:00", 2, 7, 20.0, 0),  # night
                ("2018-04-09 11:00", 2, 7, 40.0, 0),  # 8 days later
            ]
        )
        .sort_values("TX_DATETIME")
        .reset_index(drop=True)
    )
    f = hb.features(tx).set_index(tx["TX_DATETIME"])
    row = f.loc[pd.Timestamp("2018-04-02 09:00")]
    assert row["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 3
    assert row["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == pytest.approx(30.0)
    assert row["TX_DURING_WEEKEND"] == 0
    assert f.loc[pd.Timestamp("2018-04-01 10:00"), "TX_DURING_WEEKEND"] == 1
    assert f.loc[pd.Timestamp("2018-04-02 05:00"), "TX_DURING_NIGHT"] == 1
    assert row["TX_DURING_NIGHT"] == 0
    # Terminal 7 on 04-09 11:00 looks at (03-24 11:00, 04-02 11:00] minus nothing newer than the
    # 7-day delay: the three payments of 04-01 10:00, 04-01 20:00 and 04-02 05:00, one fraud.
    last = f.loc[pd.Timestamp("2018-04-09 11:00")]
    assert last["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 2  # (04-01 11:00, 04-02 11:00]
    assert last["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.0
    assert last["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 3
    assert last["TERMINAL_ID_RISK_7DAY_WINDOW"] == pytest.approx(1 / 3)
    assert last["CUSTOMER_ID_NB_TX_7DAY_WINDOW"] == 1  # 04-02 05:00 is more than 7 days back
    assert last["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 2
    assert f.loc[pd.Timestamp("2018-04-01 10:00"), "TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 0
    assert list(f.columns) == list(hb.FEATURES)


def test_split_removes_cards_known_to_be_compromised(small: pd.DataFrame) -> None:
    start = datetime(2018, 5, 1, tzinfo=UTC)
    s = hb.split(small, start)
    assert s.train["TX_DATETIME"].min() >= pd.Timestamp("2018-05-01")
    assert s.train["TX_DATETIME"].max() < pd.Timestamp("2018-05-08")
    assert s.test["TX_DATETIME"].min() >= pd.Timestamp("2018-05-15")
    assert s.test["TX_DATETIME"].max() < pd.Timestamp("2018-05-22")
    known = set(s.train.loc[s.train["TX_FRAUD"] == 1, "CUSTOMER_ID"])
    assert not known & set(s.test["CUSTOMER_ID"])
    # A card defrauded on the first delay day is gone from the second test day on.
    first_delay = small[small["TX_DATETIME"].dt.date == pd.Timestamp("2018-05-08").date()]
    late = set(first_delay.loc[first_delay["TX_FRAUD"] == 1, "CUSTOMER_ID"]) - known
    day2 = s.test[s.test["TX_DATETIME"] >= pd.Timestamp("2018-05-16")]
    assert not late & set(day2["CUSTOMER_ID"])


@pytest.mark.timeout(600)  # about three minutes on 2 cores
def test_the_deployable_features_do_as_well_as_the_handbooks_own(tmp_path: Path) -> None:
    """The whole benchmark protocol at half the handbook's size (2,500 customers, 5,000
    terminals, 183 days: 0.9M transactions), with the deployable row: the same protocol on what
    the scorer and the entity stage compute from examples/features/handbook.yaml, replayed
    point-in-time. The deployable features must do as well as the handbook's own (within 5%
    on AP, 10% on CP@100: 0.621 against 0.633 and 0.199 against 0.210 when this was written).
    The full-size figures (AP >= 0.65 and CP@100 >= 0.28 on seed 0, above the published random
    forest) are measured by `make bench` (bench/quality_bench.py)."""
    progress: list[tuple[float, str]] = []
    result = benchmark.run(
        hb.HandbookConfig(customers=2500, terminals=5000),
        kinds=("random-forest",),
        deployable=True,
        progress=lambda what: progress.append((time.monotonic(), what)),
    )
    steps = [f"{b[0] - a[0]:.0f}s {a[1]}" for a, b in itertools.pairwise(progress)]
    print("\n" + "\n".join(steps))
    assert 800_000 < result.data["transactions"] < 1_000_000
    top = benchmark.best(result)
    deployable = benchmark.deployable_row(result)
    assert deployable is not None
    assert deployable.extra["feature_set"] == benchmark.handbook_features().version
    assert top is not deployable  # "best of ours" is on the handbook's features
    print(f"\nours: {top.metrics}\ndeployable: {deployable.metrics}")
    assert top.metrics["average_precision"] >= 0.58
    # CP@100 counts cards among 100 a day over 7 days: a step of 1/700, so a wider margin.
    for key, share in (("average_precision", 0.95), ("card_precision_at_100", 0.9)):
        assert deployable.metrics[key] >= share * top.metrics[key], key
    paths = report.write(tmp_path, title="t", rows=result.rows)
    document = json.loads(paths["json"].read_text())
    names = [r["name"] for r in document["rows"]]
    assert set(hb.PUBLISHED) <= set(names) and top.name in names
    assert paths["pr_curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| *random forest (handbook baseline)* (published) |" in paths["markdown"].read_text()


def test_fit_takes_handbook_shaped_data_with_the_handbook_feature_file(tmp_path: Path) -> None:
    """A CSV in the handbook's shape, converted to our contract (customer -> user_id, terminal
    -> merchant), trains with `--features examples/features/handbook.yaml` under the handbook's
    split; the manifest records the set, terminal features and all."""
    from fraud_training.cli import app
    from typer.testing import CliRunner

    tx = hb.simulate(hb.HandbookConfig(customers=400, terminals=800, days=60, seed=3))
    csv = tmp_path / "handbook.csv"
    benchmark.as_contract(tx).to_csv(csv, index=False)
    features = Path(__file__).resolve().parents[2] / "examples/features/handbook.yaml"
    runner = CliRunner()
    work, model = tmp_path / "fit", tmp_path / "model"
    result = runner.invoke(
        app,
        ["fit", str(csv), "--out", str(work), "--features", str(features), "--test-days", "7",
         "--delay-days", "7", "--train-days", "21"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(work), "--out", str(model), "--version", "hb-1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["feature_set_version"] == benchmark.handbook_features().version
    assert "terminal_risk_7d" in manifest["feature_names"]
