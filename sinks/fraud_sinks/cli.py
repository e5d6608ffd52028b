"""``fraud-cases``: the analyst's side of the case store.

    fraud-cases open --limit 20 --since 24h         # open cases, newest first (--json)
    fraud-cases show tx-123                         # one case and its audit trail (--json)
    fraud-cases label tx-123 tx-456 --fraud         # recorded as your database login
    fraud-cases label --file verdicts.csv           # transaction_id,is_fraud[,at]
    fraud-cases label tx-789 --legit --by bob --kafka broker:9092 --topic fraud-labels [--dsn]
    fraud-cases migrate                             # with the schema owner's DSN

Labels go straight into the case store (``--dsn`` or ``FRAUD_CASES_DSN``, your own login in
role ``fraud_analyst``): the database records the login as the author, whatever is typed. Or
onto the labels topic (``--kafka``) for the case-store sink to record: a Kafka message carries
no authenticated author, so ``--by`` is kept as a claim beside the sink's login. With a DSN as
well, each message carries the case's transaction, which the entity stage needs to count the
verdict in label features (a terminal's fraud rate: docs/features.md). A label for a
case not written yet is kept and applied when it arrives. ``fraud-train fit postgresql://... --table
training_examples`` then trains on the verdicts.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fraud_sinks.case_store import CaseStore, migrate
from fraud_sinks.messages import Label

app = typer.Typer(
    help="Work the fraud case store: list open cases, label them, migrate the schema.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion for bash, zsh, fish and PowerShell
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
Dsn = Annotated[
    str | None,
    typer.Option(envvar="FRAUD_CASES_DSN", help="postgresql://... of the case store"),
]


def _connect(dsn: str | None) -> Any:
    import psycopg

    if not dsn:
        raise typer.BadParameter("give --dsn or set FRAUD_CASES_DSN", param_hint="--dsn")
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        console.print(f"[red]cannot reach the case store:[/red] {str(exc).strip()}")
        raise typer.Exit(2) from exc


@app.command("migrate")
def migrate_cmd(dsn: Dsn = None) -> None:
    """Apply the project's schema migrations (the case-store sink also does at start)."""
    with _connect(dsn) as conn:
        applied = migrate(conn)
    console.print(f"applied: {', '.join(applied)}" if applied else "schema up to date")


def _since(text: str | None) -> datetime | None:
    """``30m``, ``24h``, ``7d`` ago, or an ISO 8601 time."""
    if not text:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("30m, 24h, 7d or an ISO time", param_hint="--since") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


Json = Annotated[bool, typer.Option("--json", help="JSON on stdout instead of a table")]


@app.command("open")
def open_cmd(
    dsn: Dsn = None,
    limit: Annotated[int, typer.Option(min=1, help="rows to show")] = 20,
    detector: Annotated[str | None, typer.Option(help="only this FraudDetector")] = None,
    since: Annotated[
        str | None, typer.Option(help="only cases scored since: 30m, 24h, 7d or an ISO time")
    ] = None,
    as_json: Json = False,
) -> None:
    """Cases that were alerted (review or block) and have no label yet, newest first."""
    with _connect(dsn) as conn:
        rows = conn.execute(
            "SELECT transaction_id, user_id, action, score, reasons, "
            "transaction ->> 'amount', scored_at FROM cases "
            "WHERE action <> 'allow' AND label IS NULL AND (%s::text IS NULL OR detector = %s) "
            "AND (%s::timestamptz IS NULL OR scored_at >= %s) "
            "ORDER BY scored_at DESC LIMIT %s",
            (detector, detector, since_at := _since(since), since_at, limit),
        ).fetchall()
    if as_json:
        keys = ("transaction_id", "user_id", "action", "score", "reasons", "amount", "scored_at")
        typer.echo(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], default=str))
        return
    table = Table("transaction", "user", "action", "score", "reasons", "amount", "scored at")
    for tx, user, action, score, reasons, amount, at in rows:
        table.add_row(tx, user, action, f"{score:.3f}", ", ".join(reasons), amount or "", str(at))
    Console().print(table)


@app.command("show")
def show_cmd(
    transaction_id: Annotated[str, typer.Argument(help="the case's transaction id")],
    dsn: Dsn = None,
    as_json: Json = False,
) -> None:
    """One case: its decision and reasons, the transaction (card numbers masked), the
    verdict, and its audit trail."""
    from psycopg.rows import dict_row

    with _connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        case = cur.execute(
            "SELECT * FROM cases WHERE transaction_id = %s", (transaction_id,)
        ).fetchone()
        if case is None:
            console.print(f"[red]no case {transaction_id}[/red]")
            raise typer.Exit(1)
        audit = cur.execute(
            "SELECT at, kind, detail FROM audit WHERE subject = %s ORDER BY at", (transaction_id,)
        ).fetchall()
    case = {k: _masked(v) for k, v in case.items()}
    if as_json:
        typer.echo(json.dumps({"case": case, "audit": audit}, default=str))
        return
    table = Table("field", "value", title=f"case {transaction_id}", show_header=False)
    for key, value in case.items():
        if value is not None:
            text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
            table.add_row(key, text)
    Console().print(table)
    trail = Table("at", "kind", "detail", title="audit trail")
    for row in audit:
        trail.add_row(str(row["at"]), row["kind"], json.dumps(row["detail"], default=str))
    Console().print(trail)


def _masked(value: Any) -> Any:
    """Card numbers masked in anything shown (the store keeps alerts' transactions masked
    already; this holds for whatever a case may carry)."""
    from fraud_runtime.redact import mask_pans

    if isinstance(value, str):
        return mask_pans(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


@app.command("label")
def label_cmd(
    transactions: Annotated[list[str] | None, typer.Argument(help="transaction ids")] = None,
    fraud: Annotated[
        bool | None, typer.Option("--fraud/--legit", help="the verdict for the ids given")
    ] = None,
    by: Annotated[
        str, typer.Option(help="with --kafka: who decided (kept as a claim, not authenticated)")
    ] = "",
    file: Annotated[
        Path | None, typer.Option(help="CSV: transaction_id,is_fraud[,at]", exists=True)
    ] = None,
    dsn: Dsn = None,
    kafka: Annotated[
        str | None, typer.Option(help="bootstrap servers: publish to the labels topic instead")
    ] = None,
    topic: Annotated[str, typer.Option(help="the labels topic")] = "fraud-labels",
) -> None:
    """Record analysts' verdicts on cases."""
    if kafka and not by:
        raise typer.BadParameter("say who decided: the topic carries no login", param_hint="--by")
    if by and not kafka:
        raise typer.BadParameter(
            "the case store records your database login as the author; --by is for --kafka",
            param_hint="--by",
        )
    labels = _labels_from(transactions or [], fraud, by, file)
    if not labels:
        raise typer.BadParameter("give transaction ids (with --fraud or --legit) or --file")
    if kafka:
        found: dict[str, Any] = {}
        if dsn:
            with _connect(dsn) as conn:
                found = _transactions(conn, [lab.transaction_id for lab in labels])
        _publish(labels, kafka, topic, found)
        console.print(
            f"published {len(labels)} label(s) to {topic}, {len(found)} with their transaction"
        )
        if len(found) < len(labels):
            console.print(
                "labels without their transaction (no case, or no --dsn) are recorded by the "
                "case store but not counted in label features"
            )
        return
    with _connect(dsn) as conn:
        result = CaseStore(conn).label(labels)
    console.print(
        f"labelled {result.applied} case(s); {result.pending} wait for their case to arrive"
    )


def _labels_from(ids: list[str], fraud: bool | None, by: str, file: Path | None) -> list[Label]:
    now = datetime.now(UTC)
    if ids and fraud is None:
        raise typer.BadParameter("say --fraud or --legit for the ids given")
    labels = [Label(tx, bool(fraud), by, now) for tx in ids]
    if file is None:
        return labels
    with file.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            verdict = (row.get("is_fraud") or "").strip().lower()
            if not row.get("transaction_id") or verdict not in ("0", "1", "true", "false"):
                raise typer.BadParameter(
                    f"{file}:{line}: need transaction_id and is_fraud (0/1/true/false)"
                )
            at = datetime.fromisoformat(row["at"]) if row.get("at") else now
            if at.tzinfo is None:
                raise typer.BadParameter(f"{file}:{line}: 'at' needs a time zone")
            labels.append(Label(row["transaction_id"], verdict in ("1", "true"), by, at))
    return labels


def _transactions(conn: Any, ids: list[str]) -> dict[str, Any]:
    """The cases' transactions (as the scorer received them), by id."""
    rows = conn.execute(
        "SELECT transaction_id, transaction FROM cases "
        "WHERE transaction_id = ANY(%s) AND transaction IS NOT NULL",
        (ids,),
    ).fetchall()
    return dict(rows)


def _publish(labels: list[Label], bootstrap: str, topic: str, transactions: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for lab in labels:
        body = {
            "transaction_id": lab.transaction_id,
            "is_fraud": lab.is_fraud,
            "by": lab.by,
            "at": lab.at.isoformat(),
        }
        if lab.transaction_id in transactions:
            body["transaction"] = transactions[lab.transaction_id]
        producer.produce(topic, json.dumps(body).encode(), lab.transaction_id.encode())
    if producer.flush(30):
        console.print("[red]the broker did not acknowledge every label[/red]")
        raise typer.Exit(1)
