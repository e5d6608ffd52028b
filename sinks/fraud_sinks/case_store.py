"""The PostgreSQL case store: decisions and alerts as cases, analysts' labels, an append-only
audit trail, and the ``training_examples`` view that feeds ``fraud-train``.

Writes are batched and idempotent on ``transaction_id``: a redelivered decision (at-least-once
Kafka) updates the same case and never adds a second audit row. The schema belongs to the
project: numbered SQL files in ``migrations/`` applied in order, each once, recorded in
``schema_migrations``, by the schema's owner (a migration role). The runtime connects as a
member of ``fraud_case_writer`` (migration 003): no DDL, INSERT-only on ``audit``, and label
authors set by the database from the login, never from input.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg

from fraud_sinks.messages import Label

_UPSERT = """
INSERT INTO cases (transaction_id, user_id, detector, track, action, score, reasons,
                   model_version, rules_version, event_time, scored_at, transaction, why)
SELECT transaction_id, user_id, detector, track, action, score, reasons,
       model_version, rules_version, event_time, scored_at, transaction, why
FROM incoming
ON CONFLICT (transaction_id) DO UPDATE SET
    action = EXCLUDED.action, score = EXCLUDED.score, reasons = EXCLUDED.reasons,
    model_version = EXCLUDED.model_version, rules_version = EXCLUDED.rules_version,
    scored_at = EXCLUDED.scored_at,
    transaction = COALESCE(EXCLUDED.transaction, cases.transaction),
    why = COALESCE(EXCLUDED.why, cases.why)
"""
_AUDIT = """
INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail)
SELECT 'decision', transaction_id, detector, model_version, rules_version,
       jsonb_build_object('action', action, 'score', score, 'track', track)
FROM incoming
ON CONFLICT (subject) WHERE kind = 'decision' DO NOTHING
"""
_SERVING = """
INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail)
SELECT DISTINCT ON (detector, track, model_version, rules_version)
       'serving', track || ':' || model_version || ':' || rules_version, detector,
       model_version, rules_version,
       jsonb_build_object('track', track, 'first_decision', transaction_id,
                          'first_scored_at', scored_at)
FROM incoming
ORDER BY detector, track, model_version, rules_version, scored_at
ON CONFLICT (detector, subject) WHERE kind = 'serving' DO NOTHING
"""
_COLUMNS = (
    "transaction_id",
    "user_id",
    "detector",
    "track",
    "action",
    "score",
    "reasons",
    "model_version",
    "rules_version",
    "event_time",
    "scored_at",
    "transaction",
    "why",
)


def migrations() -> list[tuple[str, str]]:
    """(name, SQL) of every migration shipped with the package, in order."""
    folder = resources.files("fraud_sinks") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name, f.read_text()) for f in files]


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply the migrations not applied yet (under an advisory lock); returns their names."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7311)")  # one migrator at a time
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        for name, sql in migrations():
            if name in done:
                continue
            conn.execute(sql)  # type: ignore[arg-type]
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
    return applied


def pending_migrations(conn: psycopg.Connection[Any]) -> list[str]:
    """The shipped migrations this database has not applied (all of them on an empty one)."""
    found = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    done = (
        {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        if found and found[0]
        else set()
    )
    return [name for name, _ in migrations() if name not in done]


def owns_the_schema(conn: psycopg.Connection[Any]) -> bool:
    """Whether this login could alter the audit trail (it owns ``audit``, or is superuser):
    true of a migration role, which the runtime should not be."""
    row = conn.execute(
        "SELECT pg_has_role(current_user, tableowner, 'USAGE') "
        "OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
        "FROM pg_tables WHERE schemaname = 'public' AND tablename = 'audit'"
    ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class LabelResult:
    applied: int  # the case was there and now carries the label
    pending: int  # the case has not arrived: applied when it does


class CaseStore:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def write(self, decisions: Sequence[dict[str, Any]]) -> int:
        """Upsert a batch of decisions (the scorer's Decision JSON, alerts included); one
        COPY into a temporary table, one upsert, one audit insert. Returns rows written."""
        if not decisions:
            return 0
        with self.conn.transaction():
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming (LIKE cases INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            )
            with self.conn.cursor().copy(
                f"COPY incoming ({', '.join(_COLUMNS)}) FROM STDIN"
            ) as copy:
                for d in _latest_per_transaction(decisions):
                    copy.write_row(_row(d))
            self.conn.execute(_UPSERT)
            self.conn.execute(_AUDIT)
            self.conn.execute(_SERVING)
            # Labels that arrived before their case, applied as it lands (and audited).
            ids = list({d["transaction_id"] for d in decisions})
            self.conn.execute("SELECT apply_pending_labels(%s)", (ids,))
        return len(decisions)

    def label(self, labels: Iterable[Label]) -> LabelResult:
        """Record analysts' verdicts, each with an audit row, through ``record_label()``: the
        author is the database role this connection logged in as; a label's own ``by`` (what
        a relayed message says) is kept as a claim. A label whose case has not arrived yet
        waits in ``pending_labels`` and is applied when the case is written."""
        outcomes: Counter[str] = Counter()
        with self.conn.transaction():
            for lab in labels:
                row = self.conn.execute(
                    "SELECT record_label(%s, %s, %s, %s)",
                    (lab.transaction_id, lab.is_fraud, lab.at, lab.by or None),
                ).fetchone()
                outcomes[row[0] if row else "applied"] += 1
        return LabelResult(outcomes["applied"] + outcomes["same"], outcomes["pending"])

    def record_rollout(self, detector: str, event: str, detail: dict[str, Any]) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO audit (kind, subject, detector, model_version, detail) "
                "VALUES ('rollout', %s, %s, %s, %s)",
                (event, detector, detail.get("model_version"), json.dumps(detail)),
            )


def _latest_per_transaction(decisions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch may hold the same transaction twice (a redelivery, or its decision and its
    alert): keep the last, and the transaction body and reason codes from whichever carried
    them (only the alert does)."""
    latest: dict[str, dict[str, Any]] = {}
    for d in decisions:
        prior = latest.get(d["transaction_id"])
        kept = {} if prior is None else {
            k: prior[k] for k in ("transaction", "why") if d.get(k) is None and prior.get(k)
        }  # fmt: skip
        latest[d["transaction_id"]] = {**d, **kept} if kept else d
    return list(latest.values())


def _row(d: dict[str, Any]) -> tuple[Any, ...]:
    tx = d.get("transaction")
    return (
        d["transaction_id"],
        d["user_id"],
        d["detector"],
        d["track"],
        d["action"],
        d["score"],
        list(d.get("reasons") or []),
        d["model_version"],
        d["rules_version"],
        datetime.fromtimestamp(d["event_time"], UTC),
        datetime.fromtimestamp(d["scored_at"], UTC),
        None if tx is None else tx if isinstance(tx, str) else json.dumps(tx),
        None if d.get("why") is None else json.dumps(d["why"]),
    )
