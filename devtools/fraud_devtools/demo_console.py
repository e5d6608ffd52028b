"""``fraud-demo --console``: the demo's decisions in a case store, and the analyst console on
them at a printed URL.

PostgreSQL comes from the machine's binaries (:mod:`fraud_devtools.postgres`), migrated by its
owner. The real case-store sink (``python -m fraud_sinks``) consumes the scorer's decisions and
alerts as a deployment's would, under a login in ``fraud_case_writer``. After the traffic, a
share of the alerts is labelled with the generator's ground truth, as analysts would through
the labels topic, so the performance view has labels to measure. Then the real console
(``python -m fraud_console``) serves the cases under a login in ``fraud_console``, with a built-in
user whose password is made up for this run and printed.
"""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import yaml
from confluent_kafka import Producer
from rich.console import Console

from fraud_devtools.local import free_port, stop_process, wait_http_ok
from fraud_devtools.postgres import logins, postgres_server

LABELS_TOPIC = "fraud-labels"
USER = "analyst"


@dataclass
class CaseStore:
    owner: str  # the schema owner's DSN (the demo's superuser)
    console_dsn: str
    sink: subprocess.Popen[bytes]


@contextmanager
def case_store(
    build: Path, bootstrap: str, topics: dict[str, str], out: Console
) -> Iterator[CaseStore]:
    """PostgreSQL and the case-store sink, until the block ends."""
    from fraud_sinks.case_store import migrate

    with ExitStack() as stack:
        url = stack.enter_context(postgres_server())
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        dsn = logins(url, {"sink": "fraud_case_writer", "console": "fraud_console"})
        port = free_port()
        config = build / "demo-sink.yaml"
        config.write_text(yaml.safe_dump({
            "detector": "demo", "sink": "postgres",
            "kafka": {"bootstrap_servers": bootstrap, "group_id": "fraud-sink-demo-postgres"},
            "topics": {"decisions": topics["decisions"], "alerts": topics["alerts"],
                       "labels": LABELS_TOPIC, "dead_letter": topics["dead_letter"]},
            "postgres": {"dsn": dsn["sink"]},
            "metrics": {"host": "127.0.0.1", "port": port},
        }))  # fmt: skip
        log = stack.enter_context((build / "demo-sink.log").open("wb"))
        sink = subprocess.Popen(
            [sys.executable, "-m", "fraud_sinks", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/readyz", sink)
            out.print(f"[green]case store running[/green] (PostgreSQL {url.rsplit('@', 1)[1]}, "
                      f"case-store sink pid {sink.pid})")  # fmt: skip
            yield CaseStore(url, dsn["console"], sink)
        finally:
            stop_process(sink)


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def label_alerts(
    store: CaseStore, bootstrap: str, truth: dict[str, tuple[int, str]], share: float, seed: int
) -> int:
    """Analysts' verdicts on ``share`` of the alerts (the generator's ground truth), through
    the labels topic the case-store sink reads; returns how many the case store recorded."""
    with psycopg.connect(store.owner) as conn:
        alerts = [r[0] for r in conn.execute(
            "SELECT transaction_id FROM cases WHERE action <> 'allow' ORDER BY transaction_id"
        ).fetchall()]  # fmt: skip
    picked = [t for t in alerts if t in truth and random.Random(f"{seed}{t}").random() < share]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    now = datetime.now(UTC).isoformat()
    for tx in picked:
        body = {"transaction_id": tx, "is_fraud": bool(truth[tx][0]), "by": "demo", "at": now}
        producer.produce(LABELS_TOPIC, json.dumps(body).encode(), tx.encode())
    producer.flush(30)
    deadline, recorded = time.monotonic() + 60, 0
    while time.monotonic() < deadline:
        recorded = _count(store.owner, "SELECT count(*) FROM cases WHERE label IS NOT NULL")
        if recorded >= len(picked):
            break
        time.sleep(0.5)
    return recorded


def wait_for_cases(store: CaseStore, decided: int, timeout: float = 120.0) -> int:
    """Until the sink has written every decision the demo read back (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = _count(store.owner, "SELECT count(*) FROM cases")
        if n >= decided:
            break
        time.sleep(0.5)
    return n


def serve_console(
    store: CaseStore,
    build: Path,
    bootstrap: str,
    out: Console,
    seconds: float | None,
    port: int | None = None,
) -> int:
    """The console on the demo's cases until Ctrl-C (or ``seconds``); returns its exit code."""
    from fraud_console.auth import hash_password

    password = secrets.token_urlsafe(12)
    port = port or free_port()
    config = build / "demo-console.yaml"
    config.write_text(yaml.safe_dump({
        "dsn": store.console_dsn, "session_secret": secrets.token_urlsafe(32),
        "secure_cookies": False, "host": "127.0.0.1", "port": port,
        "auth": {"mode": "builtin",
                 "users": {USER: {"password": hash_password(password), "role": "analyst"}}},
        "kafka": {"bootstrap_servers": bootstrap}, "labels_topic": LABELS_TOPIC,
    }))  # fmt: skip
    login = build / "demo-console-login.txt"
    with (build / "demo-console.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fraud_console", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc)
            # Written once the console answers, so whoever waits for it can log in at once.
            login.write_text(f"{USER}\n{password}\n")
            out.print(
                f"\n[bold green]analyst console[/bold green] http://127.0.0.1:{port}/  "
                f"user [bold]{USER}[/bold], password [bold]{password}[/bold] "
                f"(also in {login})\n"
                + ("Ctrl-C stops it." if seconds is None else f"Stops in {seconds:.0f} s."),
                soft_wrap=True,  # the URL and the password stay whole at any terminal width
            )
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:  # Ctrl-C, also while the console is still starting
            out.print("stopping the console")
        finally:
            code = stop_process(proc)
    # uvicorn exits with the signal it handled once it has shut down cleanly.
    return 0 if code in (0, -15) else code
