"""The PostgreSQL case store: decisions and alerts as cases, analysts' labels, an append-only
audit trail, and the ``training_examples`` view that feeds ``fraud-train``.

Writes are batched and idempotent on ``transaction_id``: a redelivered decision (at-least-once
Kafka) updates the same case and never adds a second audit row. The schema belongs to the
project: numbered SQL files in ``migrations/`` applied in order, each once, recorded in
``schema_migrations``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg

from fraud_sinks.messages import Label

_UPSERT = """
INSERT INTO cases (transaction_id, user_id, detector, track, action, score, reasons,
                   model_version, rules_version, event_time, scored_at, transaction)
SELECT transaction_id, user_id, detector, track, action, score, reasons,
       model_version, rules_version, event_time, scored_at, transaction
FROM incoming
ON CONFLICT (transaction_id) DO UPDATE SET
    action = EXCLUDED.action, score = EXCLUDED.score, reasons = EXCLUDED.reasons,
    model_version = EXCLUDED.model_version, rules_version = EXCLUDED.rules_version,
    scored_at = EXCLUDED.scored_at,
    transaction = COALESCE(EXCLUDED.transaction, cases.transaction)
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
# Labels that arrived before their case, applied as the case lands (then forgotten).
_APPLY_PENDING = """
WITH applied AS (
    DELETE FROM pending_labels p USING incoming i
    WHERE p.transaction_id = i.transaction_id
    RETURNING p.*
)
UPDATE cases c SET label = a.label, labelled_by = a.labelled_by, labelled_at = a.labelled_at
FROM applied a WHERE c.transaction_id = a.transaction_id
RETURNING c.transaction_id, c.label, c.labelled_by, c.detector, c.model_version,
          c.rules_version
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
            for tx_id, label, by, *versions in self.conn.execute(_APPLY_PENDING).fetchall():
                self._audit_label(tx_id, bool(label), by, versions)
        return len(decisions)

    def label(self, labels: Iterable[Label]) -> LabelResult:
        """Record analysts' verdicts, each with an audit row. A label whose case has not
        arrived yet waits in ``pending_labels`` and is applied when the case is written."""
        applied = pending = 0
        with self.conn.transaction():
            for lab in labels:
                updated = self.conn.execute(
                    "UPDATE cases "
                    "SET label = %(label)s, labelled_by = %(by)s, labelled_at = %(at)s "
                    "WHERE transaction_id = %(tx)s AND (label, labelled_by, labelled_at) "
                    "IS DISTINCT FROM (%(label)s::smallint, %(by)s, %(at)s::timestamptz) "
                    "RETURNING detector, model_version, rules_version",
                    {
                        "label": int(lab.is_fraud),
                        "by": lab.by,
                        "at": lab.at,
                        "tx": lab.transaction_id,
                    },
                ).fetchone()
                if updated is None and self._exists(lab.transaction_id):
                    applied += 1  # the same verdict again (a redelivered label): audited once
                    continue
                if updated is None:
                    self.conn.execute(
                        "INSERT INTO pending_labels "
                        "(transaction_id, label, labelled_by, labelled_at) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (transaction_id) DO UPDATE SET "
                        "label = EXCLUDED.label, labelled_by = EXCLUDED.labelled_by, "
                        "labelled_at = EXCLUDED.labelled_at",
                        (lab.transaction_id, int(lab.is_fraud), lab.by, lab.at),
                    )
                    pending += 1
                    continue
                self._audit_label(lab.transaction_id, lab.is_fraud, lab.by, list(updated))
                applied += 1
        return LabelResult(applied, pending)

    def _exists(self, tx_id: str) -> bool:
        found = self.conn.execute("SELECT 1 FROM cases WHERE transaction_id = %s", (tx_id,))
        return found.fetchone() is not None

    def _audit_label(self, tx_id: str, is_fraud: bool, by: str, versions: list[Any]) -> None:
        self.conn.execute(
            "INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail) "
            "VALUES ('label', %s, %s, %s, %s, %s)",
            (tx_id, *versions, json.dumps({"is_fraud": is_fraud, "by": by})),
        )

    def record_rollout(self, detector: str, event: str, detail: dict[str, Any]) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO audit (kind, subject, detector, model_version, detail) "
                "VALUES ('rollout', %s, %s, %s, %s)",
                (event, detector, detail.get("model_version"), json.dumps(detail)),
            )


def _latest_per_transaction(decisions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch may hold the same transaction twice (a redelivery, or its decision and its
    alert): keep the last, and the transaction body from whichever carried one."""
    latest: dict[str, dict[str, Any]] = {}
    for d in decisions:
        prior = latest.get(d["transaction_id"])
        if prior is not None and d.get("transaction") is None and prior.get("transaction"):
            latest[d["transaction_id"]] = {**d, "transaction": prior["transaction"]}
        else:
            latest[d["transaction_id"]] = d
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
    )
