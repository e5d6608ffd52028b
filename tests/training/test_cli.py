"""``fraud-train`` end to end: generate -> fit -> evaluate -> export -> the scorer loads it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
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

    uri = "s3://models/fraud/v7"
    result = runner.invoke(
        app, ["export", str(work), "--out", str(model), "--version", "v7", "--uri", uri]
    )
    assert result.exit_code == 0, result.output
    digest = artifact_digest(model)
    assert result.stdout.strip() == digest  # alone: DIGEST=$(fraud-train export ...)
    # The spec.model to paste, which the operator's own model accepts as it is.
    from fraud_operator.spec import ModelRef

    snippet = yaml.safe_load(result.stderr.split("first):\n", 1)[1].split("digest (")[0])
    assert ModelRef.model_validate(snippet["model"]) == ModelRef(
        version="v7", uri=uri, digest=digest
    )
    refused = runner.invoke(app, ["export", str(work), "--uri", "s3://key:secret@models/v7"])
    assert refused.exit_code != 0 and "secret" not in refused.output
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


FEATURE_FILE = """\
history_hours: 72
features:
  - {name: amount, kind: field, field: amount}
  - {name: hour_of_day, kind: hour_of_day}
  - {name: tx_count_24h, kind: window, agg: count, window: 24h}
  - {name: amount_max_7d, kind: window, agg: max, of: amount, window: 7d}
  - {name: amount_zscore, kind: window, agg: zscore, of: amount}
  - {name: devices_24h, kind: window, agg: distinct, of: device_id, window: 24h}
  - {name: merchant_new, kind: window, agg: new_value, of: merchant}
"""


def test_a_declared_feature_set_trains_a_model_only_that_set_loads(tmp_path: Path) -> None:
    """`fit --features FILE` computes the file's features with the scorer's engine; the
    manifest records the definitions; a scorer computing them loads the model, one computing
    v1 refuses it, and rules compile against the declared names."""
    import yaml
    from fraud_scorer import feature_sets
    from fraud_scorer.config import RuleSpec
    from fraud_scorer.feature_defs import parse_feature_set
    from fraud_scorer.model import ModelError
    from fraud_scorer.rules import RuleCompileError, compile_rules

    data, work, model = tmp_path / "tx.parquet", tmp_path / "fit", tmp_path / "model"
    features = tmp_path / "features.yaml"
    features.write_text(FEATURE_FILE)
    assert (
        runner.invoke(app, ["generate", str(data), "--users", "1500", "--days", "6"]).exit_code == 0
    )
    result = runner.invoke(app, ["fit", str(data), "--out", str(work), "--features", str(features)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(work), "--out", str(model), "--version", "d1"])
    assert result.exit_code == 0, result.output
    defs = parse_feature_set(yaml.safe_load(FEATURE_FILE))
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["feature_set_version"] == defs.version and defs.version.startswith("fs-")
    assert parse_feature_set(manifest["feature_definitions"]) == defs
    assert manifest["feature_types"][-2:] == ["int", "bool"]
    declared = feature_sets.declared(defs)
    assert load_model(model, features=declared).version == "d1"
    with pytest.raises(ModelError, match=f"trained on feature set '{defs.version}'"):
        load_model(model)  # a scorer computing v1
    # The operator's preflight Job loads it the same way, given the set the scorers compute.
    from fraud_scorer.preflight import main as preflight

    pinned = ["--uri", model.as_uri(), "--digest", artifact_digest(model)]
    assert preflight([*pinned, "--features", json.dumps(manifest["feature_definitions"])]) == 0
    assert preflight(pinned) == 2
    rule = [RuleSpec(name="spree", expression="features.devices_24h > 2 && features.merchant_new")]
    assert compile_rules(rule, features=declared).rules[0].name == "spree"
    with pytest.raises(RuleCompileError, match="unknown feature 'devices_24h'"):
        compile_rules(rule)  # v1 has no such feature
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [{name: m, kind: window, agg: zscore, of: amount, entity: merchant}]")
    result = runner.invoke(app, ["fit", str(data), "--out", str(work), "--features", str(bad)])
    assert result.exit_code == 2 and "use mean, std, min or max per entity" in flat(result.output)
