"""``fraudctl explain``: a real scorer's decision, read back from the case store with the rules
that fired, the values they read and the model's top features."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from fraud_operator.ctl import app
from typer.testing import CliRunner


def test_explain_says_why_a_transaction_was_decided(database: dict[str, str]) -> None:
    with psycopg.connect(database["owner"]) as conn:
        ruled, modelled = (
            conn.execute(
                "SELECT transaction_id FROM cases WHERE why -> 'rules' <> '[]'::jsonb LIMIT 1"
            ).fetchone(),
            conn.execute("SELECT transaction_id FROM cases WHERE why ? 'model' LIMIT 1").fetchone(),
        )
    assert ruled and modelled
    runner = CliRunner(env={"FRAUD_CASES_DSN": database["console"], "COLUMNS": "200"})
    as_json = runner.invoke(app, ["explain", ruled[0], "--json"])
    assert as_json.exit_code == 0, as_json.output
    case: dict[str, Any] = json.loads(as_json.stdout)
    assert case["transaction_id"] == ruled[0] and case["action"] in ("review", "block")
    rule = case["why"]["rules"][0]
    shown = runner.invoke(app, ["explain", ruled[0]])
    assert shown.exit_code == 0 and f"rule {rule['rule']}:" in shown.stdout
    model = runner.invoke(app, ["explain", modelled[0]])
    assert model.exit_code == 0 and "the model's top features" in model.stdout
    missing = runner.invoke(app, ["explain", "no-such-tx"])
    assert missing.exit_code == 1 and "no decision" in missing.output


def test_explain_reads_a_decision_from_a_topic(model_dir: Any) -> None:
    """From the alerts topic (a real scorer pipeline's alerts on librdkafka's mock cluster):
    the newest decision for the id, with its reasons."""
    from fraud_devtools.mock_cluster import MockCluster

    from tests.console.conftest import scorer_output
    from tests.integration.harness import produce

    alerts = scorer_output(model_dir, n=1500).alerts
    assert len(alerts) > 10
    with MockCluster() as kafka:
        kafka.create_topic("fraud-alerts", 2)
        produce(kafka.bootstrap_servers, "fraud-alerts", alerts)
        runner = CliRunner(env={"COLUMNS": "200"})
        # (librdkafka's mock cluster does not answer lookups by time, which --since 1h makes:
        # the whole log instead.)
        args = ["--kafka", kafka.bootstrap_servers, "--topic", "fraud-alerts", "--since", "all"]
        target = alerts[len(alerts) // 2][0].decode()
        found = runner.invoke(app, ["explain", target, *args, "--json"])
        assert found.exit_code == 0, found.output
        decision = json.loads(found.stdout)
        assert decision["transaction_id"] == target and decision["why"]
        shown = runner.invoke(app, ["explain", target, *args])
        assert shown.exit_code == 0 and "reasons:" in shown.stdout
        none = runner.invoke(app, ["explain", "no-such-tx", *args])
        assert none.exit_code == 1 and "since all" in none.output
    neither = runner.invoke(app, ["explain", "x"])
    assert neither.exit_code == 2
