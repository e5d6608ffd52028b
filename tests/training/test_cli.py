"""``fraud-train`` end to end: generate -> fit -> evaluate -> export -> the scorer loads it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from fraud_scorer.model import artifact_digest, load_model
from fraud_training.cli import app
from typer.testing import CliRunner

runner = CliRunner()


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_generate_fit_evaluate_export(tmp_path: Path) -> None:
    data, work, model = tmp_path / "tx.parquet", tmp_path / "fit", tmp_path / "model"
    result = runner.invoke(app, ["generate", str(data), "--users", "2500", "--days", "6"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(data)
    assert frame["label"].sum() > 0

    args = ["fit", str(data), "--out", str(work), "--model", "lightgbm", "--select"]
    result = runner.invoke(app, [*args, "--target-fpr", "0.005"])
    assert result.exit_code == 0, result.output
    assert "CP@100" in result.output and (work / "fit.joblib").is_file()

    result = runner.invoke(app, ["evaluate", str(work)])
    assert result.exit_code == 0, result.output
    report = json.loads((work / "report.json").read_text())
    metrics = report["rows"][0]["metrics"]
    assert metrics["fpr_at_threshold"] <= 0.005
    assert metrics["roc_auc"] > 0.9
    assert (work / "pr_curve.png").stat().st_size > 10_000
    assert "| lightgbm |" in (work / "report.md").read_text()

    result = runner.invoke(app, ["export", str(work), "--out", str(model), "--version", "v7"])
    assert result.exit_code == 0, result.output
    digest = artifact_digest(model)
    assert digest in result.output  # what a FraudDetector pins
    assert runner.invoke(app, ["digest", str(model)]).output.strip() == digest
    loaded = load_model(model, digest=digest)
    assert loaded.version == "v7"
    assert loaded.manifest.threshold == metrics["threshold"]
    assert loaded.manifest.data["train_frauds"] > 0


def test_unlabelled_isolation_forest_from_csv(tmp_path: Path) -> None:
    data = tmp_path / "tx.csv"
    assert (
        runner.invoke(app, ["generate", str(data), "--users", "800", "--days", "4"]).exit_code == 0
    )
    work = tmp_path / "fit"
    result = runner.invoke(
        app, ["fit", str(data), "--out", str(work), "--model", "isolation-forest"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(work), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "5 graph node(s)" in flat(result.output)


def test_errors_are_clear_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "no such file" in flat(result.output)
    bad = tmp_path / "bad.csv"
    bad.write_text("transaction_id,user_id,amount\nt1,u1,3.5\n")
    result = runner.invoke(app, ["fit", str(bad)])
    assert result.exit_code == 2
    assert "missing column(s) currency, timestamp" in flat(result.output)
    result = runner.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2
    assert "run `fraud-train fit" in flat(result.output)
