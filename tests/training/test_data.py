"""Reading the user's labelled data (CSV, Parquet, a real PostgreSQL), refusing bad data with
row numbers, and training features equal to what the running scorer computes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import psycopg
import pytest
from fraud_scorer.config import DecisionSettings
from fraud_scorer.features import FEATURE_NAMES, FeatureEngine
from fraud_scorer.model import load_model
from fraud_scorer.pipeline import BatchScorer
from fraud_scorer.rules import compile_rules
from fraud_training.data import DataError, read_table, scorer_features, to_payloads, validate
from fraud_training.synth import SynthConfig, generate

from tests.records import Msg


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate(SynthConfig(users=400, days=2.0, seed=12))


def _same_content(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = ["transaction_id", "user_id", "amount", "merchant", "device_id", "label"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_dtype=False)
    assert (a["timestamp"] == b["timestamp"]).all()


def test_csv_and_parquet_round_trip(frame: pd.DataFrame, tmp_path: Path) -> None:
    expected = validate(frame)
    for name in ("tx.csv", "tx.parquet"):
        path = tmp_path / name
        if name.endswith(".csv"):
            frame.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
        else:
            frame.to_parquet(path, index=False)
        _same_content(validate(read_table(str(path))), expected)


def test_postgres_table_and_query(frame: pd.DataFrame, postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "CREATE TABLE payments (transaction_id text, user_id text, amount numeric(12,2),"
            " currency text, timestamp timestamptz, merchant text, merchant_category text,"
            " channel text, location text, device_id text, lat double precision,"
            " lon double precision, is_fraud boolean)"
        )
        with conn.cursor().copy("COPY payments FROM STDIN") as copy:
            for row in frame.itertuples(index=False):
                copy.write_row(
                    (*row[:10], row.lat, row.lon, bool(row.label))  # type: ignore[misc]
                )
    expected = validate(frame)
    got = validate(read_table(postgres_url, query="payments"), label_column="is_fraud")
    _same_content(got, expected)
    recent = read_table(
        postgres_url, query="SELECT * FROM payments WHERE timestamp >= '2026-11-03T00:00:00Z'"
    )
    assert 0 < len(recent) < len(frame)
    with pytest.raises(DataError, match=r"PostgreSQL: .*no_such_table"):
        read_table(postgres_url, query="no_such_table")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["device_id", "label"]), "missing column.*device_id, label"),
        (lambda f: f.assign(label=f["label"].astype(object).where(f.index != 3)), "empty in row"),
        (lambda f: f.assign(label=f["label"].replace({0: 2})), r"must be 0/1.*\['2'\]"),
        (lambda f: f.assign(label=0), "only 0s"),
        (
            lambda f: f.assign(amount=f["amount"].astype(object).where(f.index != 5, "12,50")),
            "'amount' is not a number in row.* 7",
        ),
        (lambda f: f.assign(timestamp=f["timestamp"].dt.tz_localize(None)), "no time zone"),
        (
            lambda f: f.assign(amount=f["amount"].where(f.index != 4, -1.0)),
            "row 6 .*invalid_amount",
        ),
        (
            lambda f: f.assign(currency=f["currency"].where(f.index != 2, "EURO")),
            "row 4 .*currency",
        ),
    ],
    ids=[
        "missing",
        "empty-label",
        "bad-label",
        "one-class",
        "bad-number",
        "naive-time",
        "negative",
        "bad-currency",
    ],
)
def test_bad_data_is_refused_with_the_rows(frame: pd.DataFrame, change, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=message):
        validate(change(frame.copy()))


def test_csv_timestamps_without_offset_are_refused(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = tmp_path / "naive.csv"
    frame.head(20).to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    with pytest.raises(DataError, match="without a time zone offset in row"):
        validate(read_table(str(path)))
    other = tmp_path / "tx.json"
    other.write_text("{}")
    with pytest.raises(DataError, match="unsupported file type"):
        read_table(str(other))


def test_training_features_are_what_the_scorer_computes(
    frame: pd.DataFrame, model_dir: Path
) -> None:
    """The same stream through the running scorer's batch pipeline and through training."""
    data = scorer_features(validate(frame))
    model = load_model(model_dir)
    scorer = BatchScorer(
        model=model,
        ruleset=compile_rules([], DecisionSettings()),
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=1 << 16,
    )
    payloads = to_payloads(frame)
    served = []
    for start in range(0, len(payloads), 500):
        batch = [Msg(p, _offset=start + i) for i, p in enumerate(payloads[start : start + 500])]
        served += [msgspec.json.decode(v) for _, v in scorer.process(batch).decisions]  # type: ignore[arg-type]
    rows = np.array([[d["features"][n] for n in FEATURE_NAMES] for d in served], np.float32)
    assert np.array_equal(rows, data.x)  # bit for bit
    scores = np.array([d["score"] for d in served])
    assert np.allclose(scores, model.score(data.x), atol=1e-6)
