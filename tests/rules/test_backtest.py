"""``fraud-rules backtest``: labelled history decided by the scorer's own pipeline, per-rule
figures, the difference against the current rules, and the command's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pandas as pd
import pytest
import yaml
from fraud_rules.backtest import RulesOnly, decide, history_of, report
from fraud_rules.cli import app
from fraud_scorer.config import DecisionSettings, RuleSpec
from fraud_scorer.feature_sets import V1
from fraud_scorer.features import FeatureEngine
from fraud_scorer.model import load_model
from fraud_scorer.pipeline import BatchScorer
from fraud_scorer.rules import compile_rules
from fraud_training.data import validate
from typer.testing import CliRunner

from tests.records import Msg

RULES = [
    {"name": "big", "expression": "tx.amount > 500.0"},
    {"name": "tiny", "expression": "tx.amount < 8.0", "action": "block"},
]


def _frame(amounts: list[float], labels: list[int]) -> pd.DataFrame:
    """One transaction per user, a minute apart."""
    n = len(amounts)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "user_id": [f"u{i}" for i in range(n)],
            "amount": amounts,
            "currency": "EUR",
            "timestamp": [f"2026-11-01T00:{i:02d}:00Z" for i in range(n)],
            "merchant": "m",
            "merchant_category": "grocery",
            "channel": "pos",
            "location": "DE",
            "device_id": [f"d{i}" for i in range(n)],
            "label": labels,
        }
    )


def test_a_backtest_decides_as_the_scorer_does(small_stream: pd.DataFrame, model_dir: Path) -> None:
    """The same rules, thresholds and model over the same stream: the backtest's actions and
    reasons are the scorer's own, row for row (features replayed point-in-time by training's
    code, decisions by the scorer's pipeline)."""
    frame = validate(small_stream.iloc[:4000].drop(columns=["scenario"]))
    specs = [
        RuleSpec(name="big", expression="tx.amount > 300.0"),
        RuleSpec(name="burst", expression="features.tx_count_1h >= 3", action="block"),
        RuleSpec(
            name="jump",
            expression="features.location_changed && features.seconds_since_last < 3600.0",
        ),
    ]
    ruleset = compile_rules(specs, DecisionSettings(review_at=0.3, block_at=0.8))
    model = load_model(model_dir)
    history = history_of(frame, V1)
    decided = decide(history, ruleset, model, batch=700)

    live = BatchScorer(
        model=model, ruleset=ruleset, engine=FeatureEngine(), detector="d", track="stable",
        max_message_bytes=65536,
    )  # fmt: skip
    result = live.process([Msg(p) for p in history.payloads])
    seen = [msgspec.json.decode(v) for _, v in result.decisions]
    assert [d["action"] for d in seen] == decided.actions.tolist()
    names = [r.name for r in ruleset.rules]
    for i, d in enumerate(seen):
        fired = [names[j] for j in decided.hits[i].nonzero()[0]]
        assert d["reasons"] == fired + (["model"] if decided.model[i] else [])
    assert set(decided.actions.tolist()) == {"allow", "review", "block"}  # all three exercised
    assert decided.hits.any(axis=0).all() and decided.model.any()


def test_per_rule_and_overall_figures_and_the_difference_against_the_current_rules() -> None:
    history = history_of(validate(_frame([10, 600, 700, 20, 800, 5], [0, 1, 0, 0, 1, 1])), V1)
    candidate = compile_rules([RuleSpec.model_validate(r) for r in RULES])
    current = compile_rules([RuleSpec.model_validate(RULES[0])])
    got = report(
        history, decide(history, candidate, RulesOnly()), decide(history, current, RulesOnly())
    )
    big, tiny = got.rules
    assert (big.figures.alerts, big.figures.precision, big.figures.recall) == (3, 2 / 3, 2 / 3)
    assert big.figures.fraud_amount == 1400.0 and big.only == 3 and big.overlap == {}
    assert (tiny.action, tiny.figures.alerts, tiny.figures.precision) == ("block", 1, 1.0)
    assert got.overall.alerts == 4 and got.overall.recall == 1.0 and got.overall.precision == 0.75
    assert got.by_action == {"allow": 2, "review": 3, "block": 1}
    assert got.model.alerts == 0  # no model: the rules alone
    d = got.against
    assert d is not None
    assert (d.new_catches, d.new_catches_amount, d.lost_catches) == (1, 5.0, 0)
    assert (d.extra_false_positives, d.fewer_false_positives, d.actions_changed) == (0, 0, 1)
    assert d.current.alerts == 3


def test_overlap_counts_the_alerts_two_rules_share() -> None:
    history = history_of(validate(_frame([600, 700, 5, 900], [1, 0, 1, 0])), V1)
    rules = [
        RuleSpec(name="big", expression="tx.amount > 500.0"),
        RuleSpec(name="huge", expression="tx.amount > 650.0"),
    ]
    got = report(history, decide(history, compile_rules(rules), RulesOnly()))
    big, huge = got.rules
    assert big.overlap == {"huge": 2} and huge.overlap == {"big": 2}
    assert big.only == 1 and huge.only == 0


runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "candidate": tmp_path / "candidate.yaml",
        "current": tmp_path / "current.yaml",
        "data": tmp_path / "history.csv",
    }
    paths["candidate"].write_text(yaml.safe_dump({"rules": RULES}))
    paths["current"].write_text(yaml.safe_dump({"rules": RULES[:1]}))
    _frame([10, 600, 700, 20, 800, 5], [0, 1, 0, 0, 1, 1]).to_csv(paths["data"], index=False)
    return paths


def test_the_command_reports_json_text_and_a_chart(files: dict[str, Path], tmp_path: Path) -> None:
    chart = tmp_path / "backtest.png"
    args = [str(files["candidate"]), "--data", str(files["data"]), "--against",
            str(files["current"])]  # fmt: skip
    result = runner.invoke(app, ["backtest", *args, "--format", "json", "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert [r["name"] for r in got["rules"]] == ["big", "tiny"]
    assert got["against"]["new_catches"] == 1 and got["overall"]["alerts"] == 4
    assert got["seconds"]["rows_per_s"] > 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = runner.invoke(app, ["backtest", *args])
    assert text.exit_code == 0, text.output
    assert "new catches 1 (5.00)" in text.output and "tiny" in text.output


def test_the_command_refuses_broken_rules_and_unreadable_data(files: dict[str, Path]) -> None:
    files["candidate"].write_text(
        yaml.safe_dump({"rules": [{"name": "x", "expression": "tx.nope"}]})
    )
    broken = runner.invoke(app, ["backtest", str(files["candidate"]), "--data", str(files["data"])])
    assert broken.exit_code == 1 and "rule 'x'" in broken.output
    missing = runner.invoke(
        app, ["backtest", str(files["current"]), "--data", str(files["data"]) + ".missing"]
    )
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_served_features_decide_on_what_the_scorer_had(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """``--served``: the features come from the decisions the scorers published, not from a
    replay; a decision missing, or one without the set's features, is refused by name."""
    served = tmp_path / "decisions.jsonl"
    frame = validate(pd.read_csv(files["data"]))
    replayed = history_of(frame, V1)
    names = V1.names
    decisions = []
    for tx, row in zip(replayed.transactions, replayed.rows, strict=True):
        values = dict(zip(names, row, strict=True))
        if tx.transaction_id == "t3":  # the scorer had this user busier than a replay says
            values["tx_count_1h"] = 9.0
            values["amount_zscore"] = None  # NaN travels as null
        decisions.append({"transaction_id": tx.transaction_id, "features": values})
    served.write_text("\n".join(json.dumps(d) for d in decisions) + "\n\n")
    history = history_of(frame, V1, served.read_bytes().splitlines())
    assert history.served and history.rows[3][names.index("tx_count_1h")] == 9.0
    assert (
        history.rows[3][names.index("amount_zscore")]
        != history.rows[3][names.index("amount_zscore")]
    )
    assert [r for i, r in enumerate(history.rows) if i != 3] == [
        r for i, r in enumerate(replayed.rows) if i != 3
    ]

    burst = tmp_path / "burst.yaml"
    burst.write_text(yaml.safe_dump({"rules": [
        {"name": "burst", "expression": "features.tx_count_1h >= 3.0"}]}))  # fmt: skip
    args = ["backtest", str(burst), "--data", str(files["data"]), "--format", "json"]
    on_served = json.loads(runner.invoke(app, [*args, "--served", str(served)]).output)
    on_replay = json.loads(runner.invoke(app, args).output)
    assert (on_served["features_from"], on_replay["features_from"]) == ("served", "replayed")
    assert (on_served["overall"]["alerts"], on_replay["overall"]["alerts"]) == (1, 0)

    served.write_text("\n".join(json.dumps(d) for d in decisions[1:]))
    gone = runner.invoke(app, [*args, "--served", str(served)])
    assert gone.exit_code == 2 and "1 of 6 transactions have no served decision" in gone.output
    del decisions[2]["features"]["tx_count_1h"]
    served.write_text("\n".join(json.dumps(d) for d in decisions))
    other = runner.invoke(app, [*args, "--served", str(served)])
    assert other.exit_code == 2 and "does not carry every feature" in other.output
    served.write_text("not json\n")
    bad = runner.invoke(app, [*args, "--served", str(served)])
    assert bad.exit_code == 2 and "decision 1 is not a decision" in bad.output
