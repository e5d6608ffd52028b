"""The case store against a real PostgreSQL server: migrations, idempotent batched writes,
labels, the append-only audit trail, and training from analysts' labels."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pandas as pd
import psycopg
import pytest
from fraud_scorer.sinks.case_store import CaseStore, Label, LabelResult, migrate, migrations
from fraud_training.data import read_table, to_payloads, validate
from fraud_training.synth import SynthConfig, generate


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


def test_labels_close_the_loop_into_training(conn: Any) -> None:
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


def test_a_label_that_arrives_before_its_case_waits_for_it(conn: Any) -> None:
    migrate(conn)
    store = CaseStore(conn)
    batch = decisions(generate(SynthConfig(users=50, days=1.0, seed=7)))
    early = batch[3]["transaction_id"]
    at = datetime(2026, 11, 22, tzinfo=UTC)
    assert store.label([Label(early, True, "analyst@bank", at)]) == LabelResult(0, 1)
    store.write(batch)
    row = conn.execute(
        "SELECT label, labelled_by FROM cases WHERE transaction_id = %s", (early,)
    ).fetchone()
    assert row == (1, "analyst@bank")
    assert conn.execute("SELECT count(*) FROM pending_labels").fetchone()[0] == 0
    audited = conn.execute(
        "SELECT detail->>'by' FROM audit WHERE kind = 'label' AND subject = %s", (early,)
    ).fetchall()
    assert audited == [("analyst@bank",)]


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
    decision = {**alert, "transaction": None}
    store.write([alert, decision])  # the alert (with the body) first, the decision after
    body = conn.execute(
        "SELECT transaction FROM cases WHERE transaction_id = %s", (alert["transaction_id"],)
    ).fetchone()[0]
    assert body == alert["transaction"]
