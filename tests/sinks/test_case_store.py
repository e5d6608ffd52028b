"""The case store against a real PostgreSQL server: migrations, idempotent batched writes,
labels, the append-only audit trail, and training from analysts' labels."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import psycopg
import pytest
from fraud_rules.cli import app as backtest_app
from fraud_sinks.case_store import (
    CaseStore,
    LabelResult,
    migrate,
    migrations,
    owns_the_schema,
    pending_migrations,
)
from fraud_sinks.cli import app
from fraud_sinks.messages import Label
from fraud_training.data import read_table, to_payloads, validate
from fraud_training.synth import SynthConfig, generate
from typer.testing import CliRunner

from tests.servers import case_store_logins


@pytest.fixture
def conn(postgres_url: str) -> Any:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS cases_test")
        admin.execute("CREATE DATABASE cases_test")
    with psycopg.connect(postgres_url.rsplit("/", 1)[0] + "/cases_test", autocommit=True) as c:
        yield c


def decisions(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for i, (raw, label) in enumerate(zip(to_payloads(frame), frame["label"], strict=True)):
        tx = msgspec.json.decode(raw)
        out.append(
            {
                "transaction_id": tx["transaction_id"],
                "user_id": tx["user_id"],
                "detector": "retail",
                "track": "stable",
                "action": "review" if label else "allow",
                "score": 0.9 if label else 0.01,
                "reasons": ["model"] if label else [],
                "model_version": "m1",
                "rules_version": "r1",
                "event_time": 1_800_000_000.0 + i,
                "scored_at": 1_800_000_001.0 + i,
                "transaction": tx,
            }
        )
    return out


def test_migrations_apply_once(conn: Any) -> None:
    assert migrate(conn) == [name for name, _ in migrations()]
    assert migrate(conn) == []  # idempotent
    tables = {
        r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {"cases", "audit", "schema_migrations"} <= tables


def test_writes_are_idempotent_and_audited_once(conn: Any) -> None:
    migrate(conn)
    store = CaseStore(conn)
    batch = decisions(generate(SynthConfig(users=200, days=1.0, seed=5)))
    assert store.write(batch) == len(batch)
    redelivered = batch[:50] + batch[:10]  # at-least-once: the same decisions again, twice
    store.write(redelivered)
    assert conn.execute("SELECT count(*) FROM cases").fetchone()[0] == len(batch)
    assert conn.execute("SELECT count(*) FROM audit WHERE kind = 'decision'").fetchone()[0] == len(
        batch
    )
    open_cases = conn.execute(
        "SELECT count(*) FROM cases WHERE action <> 'allow' AND label IS NULL"
    ).fetchone()[0]
    assert open_cases == sum(d["action"] != "allow" for d in batch)
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("DELETE FROM audit")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("UPDATE audit SET kind = 'label'")


def test_labels_close_the_loop_into_training(conn: Any, tmp_path: Path) -> None:
    migrate(conn)
    store = CaseStore(conn)
    frame = generate(SynthConfig(users=400, days=2.0, seed=6, fraud_users_share=0.1))
    batch = decisions(frame)
    store.write(batch)
    now = datetime(2026, 11, 22, tzinfo=UTC)
    labels = [
        Label(d["transaction_id"], d["action"] == "review", "analyst@bank", now) for d in batch
    ]
    labels.append(Label("no-such-transaction", True, "analyst@bank", now))
    assert store.label(labels) == LabelResult(applied=len(batch), pending=1)
    assert conn.execute("SELECT count(*) FROM audit WHERE kind = 'label'").fetchone()[0] == len(
        batch
    )
    store.record_rollout("retail", "Promoted", {"model_version": "m2"})
    # fraud-train reads the analysts' verdicts straight from the case store.
    info = conn.info
    url = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
    examples = validate(read_table(url, query="training_examples"))
    assert len(examples) == len(batch)
    assert examples["label"].sum() == frame["label"].sum()
    # ... and fraud-rules backtests rules over them.
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{name: big, expression: 'tx.amount > 100.0'}]\n")
    result = CliRunner().invoke(
        backtest_app, ["backtest", str(rules), "--data", url, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert (got["rows"], got["frauds"]) == (len(batch), int(frame["label"].sum()))
    assert got["rules"][0]["figures"]["alerts"] == int((examples["amount"] > 100.0).sum())


def test_a_label_that_arrives_before_its_case_waits_for_it(conn: Any) -> None:
    migrate(conn)
    store = CaseStore(conn)
    batch = decisions(generate(SynthConfig(users=50, days=1.0, seed=7)))
    early = batch[3]["transaction_id"]
    at = datetime(2026, 11, 22, tzinfo=UTC)
    assert store.label([Label(early, True, "analyst@bank", at)]) == LabelResult(0, 1)
    store.write(batch)
    row = conn.execute(
        "SELECT label, labelled_by, label_claimed_by FROM cases WHERE transaction_id = %s",
        (early,),
    ).fetchone()
    assert row == (1, conn.info.user, "analyst@bank")
    assert conn.execute("SELECT count(*) FROM pending_labels").fetchone()[0] == 0
    audited = conn.execute(
        "SELECT detail->>'by', detail->>'claimed_by' FROM audit "
        "WHERE kind = 'label' AND subject = %s",
        (early,),
    ).fetchall()
    assert audited == [(conn.info.user, "analyst@bank")]


def test_each_model_and_rules_version_that_decided_is_audited_once(conn: Any) -> None:
    migrate(conn)
    store = CaseStore(conn)
    batch = decisions(generate(SynthConfig(users=50, days=1.0, seed=8)))
    canary = [{**d, "track": "canary", "model_version": "m2"} for d in batch[:5]]
    store.write(batch[5:] + canary)
    store.write(batch[5:])  # the same versions again: nothing new to audit
    serving = conn.execute(
        "SELECT subject, model_version FROM audit WHERE kind = 'serving' ORDER BY subject"
    ).fetchall()
    assert serving == [("canary:m2:r1", "m2"), ("stable:m1:r1", "m1")]


def test_a_decision_and_its_alert_in_one_batch_keep_the_transaction(conn: Any) -> None:
    migrate(conn)
    store = CaseStore(conn)
    alert = decisions(generate(SynthConfig(users=20, days=1.0, seed=9)))[0]
    alert["why"] = {"rules": [{"rule": "big", "values": {"tx.amount": 5000.0}}]}
    decision = {**alert, "transaction": None, "why": None}
    store.write([alert, decision])  # the alert (with the body) first, the decision after
    body, why = conn.execute(
        "SELECT transaction, why FROM cases WHERE transaction_id = %s", (alert["transaction_id"],)
    ).fetchone()
    assert body == alert["transaction"] and why == alert["why"]
    store.write([decision])  # the decision again, alone: the reason codes stay
    (why,) = conn.execute(
        "SELECT why FROM cases WHERE transaction_id = %s", (alert["transaction_id"],)
    ).fetchone()
    assert why == alert["why"]


def documented_queries() -> list[str]:
    """The Grafana panels' SQL in docs/sinks.md, with Grafana's macros as plain SQL."""
    text = (Path(__file__).parents[2] / "docs/sinks.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    time_filter = (r"\$__timeFilter\((\w+)\)", r"\1 > now() - interval '100 years'")
    time_group = (r"\$__timeGroupAlias\((\w+), '1h'\)", r"date_trunc('hour', \1) AS time")
    return [re.sub(*time_group, re.sub(*time_filter, q)) for q in queries]


def test_the_documented_grafana_queries_run_on_the_schema(conn: Any) -> None:
    migrate(conn)
    store = CaseStore(conn)
    frame = generate(SynthConfig(users=300, days=2.0, seed=10, fraud_users_share=0.1))
    batch = decisions(frame)
    batch[0]["action"] = "block"
    store.write(batch)
    now = datetime(2026, 11, 22, tzinfo=UTC)
    alerted = [d for d in batch if d["action"] != "allow"]
    store.label(
        Label(d["transaction_id"], i % 2 == 0, "a", now) for i, d in enumerate(alerted[:20])
    )
    queries = documented_queries()
    assert len(queries) == 5
    results = [conn.execute(q).fetchall() for q in queries]
    assert all(results), "every panel shows something on a labelled store"
    top = results[0]
    amounts = [row[2] for row in top]
    assert amounts == sorted(amounts, reverse=True)
    open_cases = results[2]
    assert len(open_cases) == min(100, len(alerted) - 20)


def test_fraud_cases_cli_lists_open_cases_and_labels_them(conn: Any) -> None:
    migrate(conn)
    batch = decisions(generate(SynthConfig(users=100, days=1.0, seed=11, fraud_users_share=0.2)))
    CaseStore(conn).write(batch)
    info = conn.info
    dsn = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
    runner = CliRunner(env={"FRAUD_CASES_DSN": dsn, "COLUMNS": "200"})
    alerted = [d["transaction_id"] for d in batch if d["action"] != "allow"]
    shown = runner.invoke(app, ["open", "--limit", "500"])
    assert shown.exit_code == 0, shown.output
    assert all(tx in shown.stdout for tx in alerted[:5])
    done = runner.invoke(app, ["label", alerted[0], "--fraud"])
    assert done.exit_code == 0, done.output
    assert "labelled 1 case(s)" in " ".join(done.output.split())
    assert conn.execute(
        "SELECT label, labelled_by FROM cases WHERE transaction_id = %s", (alerted[0],)
    ).fetchone() == (1, info.user)  # the login, not a name typed
    bad = runner.invoke(app, ["label", alerted[1]])  # no verdict
    assert bad.exit_code == 2 and "--fraud or --legit" in bad.output
    typed = runner.invoke(app, ["label", alerted[1], "--fraud", "--by", "mallory"])
    assert typed.exit_code == 2 and "records your database login" in typed.output
    nobody = runner.invoke(app, ["label", alerted[1], "--fraud", "--kafka", "127.0.0.1:9"])
    assert nobody.exit_code == 2 and "who decided" in nobody.output
    # On the labels topic, with the case's transaction: what the entity stage needs.
    from fraud_devtools.mock_cluster import MockCluster
    from fraud_scorer.entity_stage import LabelMessage

    from tests.integration.harness import read_topic

    with MockCluster() as kafka:
        kafka.create_topic("verdicts", 1)
        args = ["--by", "bob", "--kafka", kafka.bootstrap_servers, "--topic", "verdicts"]
        sent = runner.invoke(app, ["label", alerted[2], "unknown-tx", "--fraud", *args])
        assert sent.exit_code == 0, sent.output
        assert "2 label(s) to verdicts, 1 with their transaction" in " ".join(sent.output.split())
        messages = [
            msgspec.json.decode(r.value or b"", type=LabelMessage)
            for r in read_topic(kafka.bootstrap_servers, "verdicts", partitions=1)
        ]
    by_id = {m.transaction_id: m for m in messages}
    assert by_id[alerted[2]].transaction is not None
    assert by_id[alerted[2]].transaction.transaction_id == alerted[2]  # type: ignore[union-attr]
    assert by_id["unknown-tx"].transaction is None
    # Training counts a verdict from when it was given (point-in-time label features).
    known = conn.execute(
        "SELECT labelled_at FROM training_examples WHERE transaction_id = %s", (alerted[0],)
    ).fetchone()
    assert known is not None and known[0] is not None
    unreachable = CliRunner(env={"FRAUD_CASES_DSN": "postgresql://x@127.0.0.1:9/none"}).invoke(
        app, ["open"]
    )
    assert unreachable.exit_code == 2 and "cannot reach the case store" in unreachable.output


def test_the_runtime_login_cannot_touch_the_schema_or_forge_an_author(
    conn: Any, postgres_url: str
) -> None:
    """Migrations run as the schema's owner; the sink's login (role fraud_case_writer) writes
    cases and labels but has no DDL, cannot change or empty the audit trail, and cannot set a
    label's author; an analyst's login (fraud_analyst) reads cases and labels as itself."""
    migrate(conn)
    dsn = case_store_logins(postgres_url.rsplit("/", 1)[0] + "/cases_test")
    batch = decisions(generate(SynthConfig(users=50, days=1.0, seed=12)))
    at = datetime(2026, 11, 22, tzinfo=UTC)
    with psycopg.connect(dsn["sink"], autocommit=True) as sink:
        assert not owns_the_schema(sink) and pending_migrations(sink) == []
        store = CaseStore(sink)
        early = Label("not-yet", True, "carol", at)
        assert store.label([early]) == LabelResult(0, 1)
        assert store.write(batch) == len(batch)
        store.write([*batch[:5], {**batch[0], "transaction_id": "not-yet"}])  # redelivered
        assert store.label([Label(batch[0]["transaction_id"], True, "dave", at)]).applied == 1
        for forbidden in (
            "DROP TRIGGER audit_append_only ON audit",
            "ALTER TABLE audit DISABLE TRIGGER audit_append_only",
            "TRUNCATE audit",
            "DELETE FROM audit",
            "UPDATE audit SET detail = '{}'",
            "UPDATE cases SET labelled_by = 'mallory'",
            "DELETE FROM cases",
            "INSERT INTO pending_labels VALUES ('x', 1, 'mallory', now())",
            "CREATE TABLE public.mine (x int)",
            "DROP TABLE cases",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                sink.execute(forbidden)  # type: ignore[arg-type]
    with psycopg.connect(dsn["alice"], autocommit=True) as alice:
        tx = batch[1]["transaction_id"]
        assert CaseStore(alice).label([Label(tx, True, "bob", at)]).applied == 1
        assert alice.execute("SELECT count(*) FROM training_examples").fetchone()[0] >= 1
        for forbidden in (
            "UPDATE cases SET label = 0",
            "INSERT INTO audit (kind, subject) VALUES ('label', 'x')",
            "SELECT apply_pending_labels(ARRAY['x'])",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                alice.execute(forbidden)  # type: ignore[arg-type]
    authors = dict(
        conn.execute(
            "SELECT transaction_id, labelled_by || '/' || coalesce(label_claimed_by, '-') "
            "FROM cases WHERE label IS NOT NULL"
        ).fetchall()
    )
    assert authors == {
        "not-yet": "sink/carol",  # relayed: the sink's login, and the message's claim
        batch[0]["transaction_id"]: "sink/dave",
        batch[1]["transaction_id"]: "alice/bob",  # alice typed bob: the login wins
    }
    audit = conn.execute(
        "SELECT detail->>'by', count(*) FROM audit WHERE kind = 'label' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert audit == [("alice", 1), ("sink", 2)]
    assert conn.execute("SELECT count(*) FROM audit WHERE kind = 'decision'").fetchone()[0] == (
        len(batch) + 1
    )


def test_the_daily_rollup_counts_each_case_once_from_any_writer(conn: Any) -> None:
    """``case_daily`` (migration 007) is what the console's performance view reads: cases
    written before the migration are backfilled, each batch after it is counted, and a
    redelivered decision (an upsert) is not counted again."""
    frame = generate(SynthConfig(users=60, days=2.0, seed=5))
    rows = decisions(frame)
    first, rest = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    with conn.transaction():  # the schema as it was before migration 007
        conn.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at "
                     "timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        for name, sql in migrations():
            if name < "007":
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
    store = CaseStore(conn)
    store.write(first)
    assert migrate(conn) == ["007_performance_rollup.sql"]
    store.write(rest)
    store.write([{**r, "score": 0.5, "action": "review"} for r in rows[:50]])  # redelivered
    rolled = conn.execute(
        "SELECT day, action, bucket, cases FROM case_daily ORDER BY 1, 2, 3"
    ).fetchall()
    assert sum(r[3] for r in rolled) == len(rows)
    # As first written: the same grouping over the cases (less the 50 re-scored ones).
    expected = {(r["action"], min(max(int(r["score"] * 20) + 1, 1), 20)): 0 for r in rows}
    for r in rows:
        expected[(r["action"], min(max(int(r["score"] * 20) + 1, 1), 20))] += 1
    got: dict[tuple[str, int], int] = {}
    for _, action, bucket, n in rolled:
        got[(action, bucket)] = got.get((action, bucket), 0) + n
    assert got == expected


def test_fraud_cases_shows_a_case_and_lists_as_json_since_a_time(conn: Any) -> None:
    migrate(conn)
    batch = decisions(generate(SynthConfig(users=100, days=1.0, seed=11, fraud_users_share=0.2)))
    alerted = [d for d in batch if d["action"] != "allow"]
    alerted[0]["transaction"] = {**alerted[0]["transaction"], "note": "card 4111111111111111"}
    CaseStore(conn).write(batch)
    info = conn.info
    dsn = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
    runner = CliRunner(env={"FRAUD_CASES_DSN": dsn, "COLUMNS": "200"})
    listed = runner.invoke(app, ["open", "--limit", "500", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert {r["transaction_id"] for r in rows} == {d["transaction_id"] for d in alerted}
    # The synthetic cases were scored on 2027-01-15.
    later = runner.invoke(app, ["open", "--json", "--since", "2027-02-01"])
    assert json.loads(later.stdout) == []
    for since in ("2027-01-01T00:00:00+00:00", "7d"):
        everything = runner.invoke(app, ["open", "--json", "--limit", "500", "--since", since])
        assert len(json.loads(everything.stdout)) == len(alerted), since
    bad = runner.invoke(app, ["open", "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since" in bad.output
    tx = alerted[0]["transaction_id"]
    shown = runner.invoke(app, ["show", tx, "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["case"]["transaction_id"] == tx and doc["case"]["action"] == "review"
    assert [a["kind"] for a in doc["audit"]] == ["decision"]
    assert "4111111111111111" not in shown.stdout and "1111" in shown.stdout
    table = runner.invoke(app, ["show", tx])
    assert table.exit_code == 0 and "audit trail" in table.stdout
    assert "4111111111111111" not in table.stdout
    missing = runner.invoke(app, ["show", "no-such-tx"])
    assert missing.exit_code == 1
