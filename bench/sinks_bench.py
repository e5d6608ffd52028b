"""``make bench``, sink side: how fast decisions reach the case store and alerts a webhook.

1. case-store writes straight to PostgreSQL, 100k decisions in batches of 1,000: the shipped
   path (one COPY into a temporary table, one upsert, one audit insert per batch) against the
   obvious one (``executemany`` of a per-row upsert and audit insert);
2. the case-store sink end to end: decisions produced to a mock Kafka cluster, consumed by a
   :class:`SinkService` and committed once written;
3. the webhook sink end to end against a local HTTP server (rate limit lifted).

PostgreSQL is a throw-away server on 127.0.0.1 (as in the tests). Writes build/bench-sinks.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from confluent_kafka import Producer
from fraud_devtools.mock_cluster import MockCluster
from fraud_sinks.case_store import CaseStore, migrate
from fraud_sinks.config import SinkSettings
from fraud_sinks.service import SinkService

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import http_receiver, postgres_server

NAIVE_UPSERT = """
INSERT INTO cases (transaction_id, user_id, detector, track, action, score, reasons,
                   model_version, rules_version, event_time, scored_at, transaction)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s)
ON CONFLICT (transaction_id) DO UPDATE SET action = EXCLUDED.action, score = EXCLUDED.score
"""
NAIVE_AUDIT = """
INSERT INTO audit (kind, subject, detector, model_version, rules_version, detail)
VALUES ('decision', %s, %s, %s, %s, '{}') ON CONFLICT (subject) WHERE kind = 'decision' DO NOTHING
"""


def decision(i: int, action: str = "allow") -> dict[str, Any]:
    return {
        "transaction_id": f"tx-{i:09d}",
        "user_id": f"u-{i % 50_000:07d}",
        "action": action,
        "score": 0.01,
        "reasons": [],
        "model_version": "m1",
        "rules_version": "r1",
        "detector": "bench",
        "track": "stable",
        "event_time": 1_800_000_000.0 + i,
        "scored_at": 1_800_000_000.5 + i,
        "latency_ms": 2.0,
        "transaction": json.dumps({"transaction_id": f"tx-{i:09d}", "amount": 12.5 + i % 300}),
    }


def fresh(admin_url: str, name: str) -> psycopg.Connection[Any]:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    conn = psycopg.connect(admin_url.rsplit("/", 1)[0] + f"/{name}", autocommit=True)
    migrate(conn)
    return conn


def bench_writes(url: str, n: int, batch: int) -> dict[str, float]:
    rows = [decision(i) for i in range(n)]
    conn = fresh(url, "bench_copy")
    store = CaseStore(conn)
    started = time.perf_counter()
    for i in range(0, n, batch):
        store.write(rows[i : i + batch])
    shipped = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, n, batch):
        store.write(rows[i : i + batch])  # all redelivered: the upsert path, no new audit rows
    redelivered = n / (time.perf_counter() - started)
    conn.close()

    conn = fresh(url, "bench_naive")
    started = time.perf_counter()
    for i in range(0, n, batch):
        chunk = rows[i : i + batch]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                NAIVE_UPSERT,
                [
                    (
                        *(d[k] for k in ("transaction_id", "user_id", "detector", "track")),
                        d["action"],
                        d["score"],
                        d["reasons"],
                        d["model_version"],
                        d["rules_version"],
                        d["event_time"],
                        d["scored_at"],
                        d["transaction"],
                    )
                    for d in chunk
                ],
            )
            cur.executemany(
                NAIVE_AUDIT,
                [
                    (d["transaction_id"], d["detector"], d["model_version"], d["rules_version"])
                    for d in chunk
                ],
            )
    naive = n / (time.perf_counter() - started)
    conn.close()
    return {
        "copy_upsert_rows_per_s": round(shipped),
        "copy_upsert_redelivered_rows_per_s": round(redelivered),
        "executemany_rows_per_s": round(naive),
        "speedup": round(shipped / naive, 1),
    }


def produce(bootstrap: str, topic: str, n: int, action: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        d = decision(i, action)
        d["transaction"] = msgspec.Raw(d["transaction"].encode())
        p.produce(topic, msgspec.json.encode(d), d["transaction_id"].encode())
        if i % 10_000 == 0:
            p.poll(0)
    p.flush(60)


def run_sink(settings: SinkSettings, progress: Any, n: int, timeout: float = 300) -> float:
    """Seconds from the first message delivered to the ``n``-th (the consumer group's join,
    about 3 s on the mock cluster, is left out)."""
    service = SinkService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    first, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = progress()
        if done and first is None:
            first = (time.perf_counter(), done)
        if done >= n:
            break
        time.sleep(0.02)
    else:
        raise RuntimeError(f"only {progress()} of {n} delivered in {timeout}s")
    assert first is not None
    elapsed = time.perf_counter() - first[0]
    service.stop()
    thread.join(60)
    return float(elapsed * n / max(1, n - first[1]))


def bench_case_store_sink(url: str, n: int) -> dict[str, float]:
    conn = fresh(url, "bench_sink")
    dsn = url.rsplit("/", 1)[0] + "/bench_sink"
    with MockCluster() as mc:
        mc.create_topic("decisions", 16)  # the mock keeps ~5 MB per partition
        mc.create_topic("alerts", 4)
        produce(mc.bootstrap_servers, "decisions", n, "allow")
        settings = SinkSettings.model_validate(
            {
                "sink": "postgres",
                "kafka": {"bootstrap_servers": mc.bootstrap_servers, "group_id": "bench"},
                "topics": {"decisions": "decisions", "alerts": "alerts", "dead_letter": "dlq"},
                "postgres": {"dsn": dsn, "migration_dsn": dsn},
                "metrics": {"host": "127.0.0.1", "port": 0},
            }
        )

        def written() -> int:
            return int(conn.execute("SELECT count(*) FROM cases").fetchone()[0])  # type: ignore[index]

        elapsed = run_sink(settings, written, n)
    conn.close()
    return {"decisions": n, "seconds": round(elapsed, 2), "decisions_per_s": round(n / elapsed)}


def bench_webhook_sink(n: int) -> dict[str, float]:
    with MockCluster() as mc, http_receiver() as hook:
        mc.create_topic("alerts", 16)
        produce(mc.bootstrap_servers, "alerts", n, "review")
        settings = SinkSettings.model_validate(
            {
                "sink": "webhook",
                "kafka": {"bootstrap_servers": mc.bootstrap_servers, "group_id": "bench"},
                "topics": {"alerts": "alerts", "dead_letter": "dlq"},
                "webhook": {"url": hook.url, "rate_per_s": 1e6, "burst": 1_000_000},
                "metrics": {"host": "127.0.0.1", "port": 0},
            }
        )
        elapsed = run_sink(settings, lambda: len(hook.bodies), n)
        posted = len(hook.bodies)
    return {"alerts": posted, "seconds": round(elapsed, 2), "alerts_per_s": round(posted / elapsed)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--alerts", type=int, default=5_000)
    parser.add_argument("--out", default="build/bench-sinks.json")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    with postgres_server() as url:
        results["case_store_writes"] = bench_writes(url, args.rows, 1000)
        print("case store writes", results["case_store_writes"], flush=True)
        results["case_store_sink"] = bench_case_store_sink(url, args.rows)
        print("case-store sink", results["case_store_sink"], flush=True)
    results["webhook_sink"] = bench_webhook_sink(args.alerts)
    print("webhook sink", results["webhook_sink"], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
