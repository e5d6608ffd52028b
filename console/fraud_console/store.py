"""The console's reads and writes on the case store. Reads are plain SQL through the indexes of
migration 006 (the queue is keyset-paginated: a page costs the same at case 1,000,000 as at
case 50); writes go only through the SECURITY DEFINER functions, which audit every change with
the analyst's name. Card numbers are masked before anything leaves this module."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import psycopg
from fraud_runtime.redact import mask_pans
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

Verdict = Literal["fraud", "legitimate", "friendly_fraud"]
VERDICTS: tuple[Verdict, ...] = ("fraud", "legitimate", "friendly_fraud")
Sort = Literal["newest", "score"]
STATUSES = ("open", "in_review", "closed")


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows: unlabelled alerts, narrowed by these; ``after`` is the last row
    of the previous page (its sort key and id)."""

    action: Literal["review", "block"] | None = None
    reason: str | None = None  # a rule's name, or "model"
    min_amount: float | None = None
    max_amount: float | None = None
    since: datetime | None = None
    until: datetime | None = None
    user: str | None = None
    merchant: str | None = None
    assignee: str | None = None
    sort: Sort = "newest"
    after: tuple[float | datetime, str] | None = None  # (score or scored_at, transaction_id)


@dataclass(frozen=True)
class QueueRow:
    transaction_id: str
    user_id: str
    action: str
    score: float
    reasons: list[str]
    scored_at: datetime
    status: str
    assignee: str | None
    amount: float | None
    currency: str | None
    merchant: str | None

    def cursor(self, sort: Sort) -> tuple[str, str]:
        key = repr(self.score) if sort == "score" else self.scored_at.isoformat()
        return key, self.transaction_id


@dataclass(frozen=True)
class Page:
    rows: list[QueueRow]
    more: bool


_QUEUE_COLUMNS = """transaction_id, user_id, action, score, reasons, scored_at, status, assignee,
    (transaction ->> 'amount')::double precision AS amount, transaction ->> 'currency' AS currency,
    transaction ->> 'merchant' AS merchant"""


def queue_query(f: QueueFilter, limit: int) -> tuple[str, list[Any]]:
    """The SQL of one queue page (pure: tested without a database)."""
    where = ["action <> 'allow'", "label IS NULL"]
    args: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        where.append(clause)
        args.extend(values)

    if f.action:
        add("action = %s", f.action)
    if f.reason:
        add("reasons @> ARRAY[%s]::text[]", f.reason)
    if f.min_amount is not None:
        add("(transaction ->> 'amount')::double precision >= %s", f.min_amount)
    if f.max_amount is not None:
        add("(transaction ->> 'amount')::double precision <= %s", f.max_amount)
    if f.since is not None:
        add("scored_at >= %s", f.since)
    if f.until is not None:
        add("scored_at < %s", f.until)
    if f.user:
        add("user_id = %s", f.user)
    if f.merchant:
        add("transaction ->> 'merchant' = %s", f.merchant)
    if f.assignee:
        add("assignee = %s", f.assignee)
    key = "score" if f.sort == "score" else "scored_at"
    if f.after is not None:
        add(f"({key}, transaction_id) < (%s, %s)", *f.after)
    sql = (
        f"SELECT {_QUEUE_COLUMNS} FROM cases WHERE {' AND '.join(where)} "  # noqa: S608 - constant fragments; values are parameters
        f"ORDER BY {key} DESC, transaction_id DESC LIMIT %s"
    )
    return sql, [*args, limit + 1]


def masked_json(value: Any) -> str:
    """A stored JSON value as indented text, card numbers masked."""
    return mask_pans(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


@dataclass
class Case:
    row: dict[str, Any]
    transaction_text: str
    why: dict[str, Any] | None
    user_recent: list[dict[str, Any]] = field(default_factory=list)
    linked: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)


_BRIEF = """transaction_id, user_id, action, score, reasons, scored_at, event_time, status,
    verdict, (transaction ->> 'amount')::double precision AS amount,
    transaction ->> 'currency' AS currency, transaction ->> 'merchant' AS merchant"""


def configure(conn: psycopg.Connection[Any]) -> None:
    """Each pooled connection: no JIT. The console's queries are short index scans, and
    PostgreSQL's JIT compiled the performance view's aggregates for longer than they ran."""
    conn.execute("SET jit = off")


class Store:
    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def ready(self, timeout_s: float = 2.0) -> tuple[bool, str]:
        """Whether the case store answers within ``timeout_s`` (the readiness probe)."""
        try:
            with self.pool.connection(timeout=timeout_s) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # any failure means not ready
            return False, f"case store unreachable: {type(exc).__name__}"
        return True, "case store answers"

    def queue(self, f: QueueFilter, limit: int) -> Page:
        sql, args = queue_query(f, limit)
        with self.pool.connection() as conn:
            rows = conn.execute(sql, args).fetchall()  # type: ignore[arg-type]
        page = [QueueRow(*r) for r in rows[:limit]]
        return Page(page, more=len(rows) > limit)

    def case(self, transaction_id: str) -> Case | None:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT transaction_id, user_id, detector, track, action, score, reasons, "
                "model_version, rules_version, event_time, scored_at, transaction, why, label, "
                "verdict, label_note, labelled_by, labelled_at, analyst, status, assignee "
                "FROM cases WHERE transaction_id = %s",
                (transaction_id,),
            ).fetchone()
            if row is None:
                return None
            tx = row.pop("transaction") or {}
            case = Case(row, masked_json(tx), row.pop("why"))
            case.user_recent = cur.execute(
                f"SELECT {_BRIEF} FROM cases WHERE user_id = %s AND transaction_id <> %s "  # noqa: S608 - constant
                "ORDER BY event_time DESC LIMIT 20",
                (row["user_id"], transaction_id),
            ).fetchall()
            for what, value in (("device", tx.get("device_id")), ("merchant", tx.get("merchant"))):
                if not value:
                    continue
                column = "device_id" if what == "device" else "merchant"
                case.linked[what] = cur.execute(
                    f"SELECT {_BRIEF} FROM cases WHERE transaction ->> '{column}' = %s "  # noqa: S608 - constant
                    "AND transaction_id <> %s AND action <> 'allow' "
                    "ORDER BY scored_at DESC LIMIT 20",
                    (value, transaction_id),
                ).fetchall()
            case.audit = cur.execute(
                "SELECT at, kind, detail FROM audit WHERE subject = %s ORDER BY id",
                (transaction_id,),
            ).fetchall()
        if case.why is not None:
            case.why = json.loads(mask_pans(json.dumps(case.why)))
        return case

    def label(self, transaction_id: str, verdict: Verdict, note: str, analyst: str) -> bool:
        """Record a verdict (and queue it for the labels topic); False: no such case."""
        with self.pool.connection() as conn:
            at = conn.execute(
                "SELECT console_label(%s, %s, %s, %s)", (transaction_id, verdict, note, analyst)
            ).fetchone()
        return at is not None and at[0] is not None

    def assign(self, transaction_ids: Sequence[str], assignee: str | None, analyst: str) -> int:
        with self.pool.connection() as conn:
            n = conn.execute(
                "SELECT console_assign(%s, %s, %s)", (list(transaction_ids), assignee, analyst)
            ).fetchone()
        return int(n[0]) if n else 0

    def set_status(self, transaction_id: str, status: str, analyst: str) -> bool:
        with self.pool.connection() as conn:
            done = conn.execute(
                "SELECT console_set_status(%s, %s, %s)", (transaction_id, status, analyst)
            ).fetchone()
        return bool(done and done[0])


# -- the model and rules performance view -------------------------------------------------------


@dataclass(frozen=True)
class Performance:
    """What analysts' labels say about the detector since ``since``: every series is plain
    JSON for the page's charts."""

    since: datetime
    precision_by_reason: dict[str, list[tuple[str, int, int]]]  # reason -> (day, labelled, fraud)
    alerts_by_day: dict[str, list[tuple[str, int]]]  # action -> (day, alerts)
    scores: dict[str, list[int]]  # "track / model version" -> cases per score twentieth
    pr_curve: list[tuple[float, float, float]]  # (threshold, precision, recall)
    labelled: int
    frauds: int


def pr_curve(bins: Sequence[tuple[float, int, int]]) -> list[tuple[float, float, float]]:
    """Precision and recall of "alert at score >= t" over labelled cases, for each score bin's
    lower bound ``t``: ``bins`` are (t, cases, frauds), in any order."""
    total = sum(f for _, _, f in bins)
    out, cases, frauds = [], 0, 0
    for t, n, f in sorted(bins, reverse=True):
        cases, frauds = cases + n, frauds + f
        out.append((t, frauds / cases if cases else 0.0, frauds / total if total else 0.0))
    return out


def _day(value: date | datetime) -> str:
    """A UTC day as the charts label it."""
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def performance(pool: ConnectionPool[Any], since: datetime) -> Performance:
    with pool.connection() as conn:
        by_reason: dict[str, list[tuple[str, int, int]]] = {}
        for day, reason, n, f in conn.execute(
            "SELECT (scored_at AT TIME ZONE 'UTC')::date AS day, reason, count(*), sum(label) "
            "FROM cases, unnest(reasons) AS reason "
            "WHERE action <> 'allow' AND label IS NOT NULL AND scored_at >= %s "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            (since,),
        ):
            by_reason.setdefault(reason, []).append((_day(day), int(n), int(f)))
        alerts: dict[str, list[tuple[str, int]]] = {}
        for day, action, n in conn.execute(
            "SELECT day, action, sum(cases) FROM case_daily "
            "WHERE action <> 'allow' AND day >= (%s AT TIME ZONE 'UTC')::date "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            (since,),
        ):
            alerts.setdefault(action, []).append((_day(day), int(n)))
        scores: dict[str, list[int]] = {}
        for track, version, bucket, n in conn.execute(
            "SELECT track, model_version, bucket, sum(cases) FROM case_daily "
            "WHERE day >= (%s AT TIME ZONE 'UTC')::date GROUP BY 1, 2, 3",
            (since,),
        ):
            scores.setdefault(f"{track} / {version}", [0] * 20)[int(bucket) - 1] += int(n)
        bins = [
            (float(t), int(n), int(f))
            for t, n, f in conn.execute(
                "SELECT floor(score * 100) / 100, count(*), sum(label) FROM cases "
                "WHERE label IS NOT NULL AND scored_at >= %s GROUP BY 1",
                (since,),
            )
        ]
    return Performance(
        since=since,
        precision_by_reason=by_reason,
        alerts_by_day=alerts,
        scores=scores,
        pr_curve=pr_curve(bins),
        labelled=sum(n for _, n, _ in bins),
        frauds=sum(f for _, _, f in bins),
    )
