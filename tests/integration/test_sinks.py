"""The sink processes end to end: a real scorer's decisions and alerts, through the real
``fraud-sink`` processes, into a real PostgreSQL and a real HTTP destination, with labels
coming back on a Kafka topic from the ``fraud-cases`` CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import psycopg
import pytest
from fraud_devtools.mock_cluster import MockCluster

from tests.integration.harness import (
    TOPICS,
    ScorerProcess,
    SinkProcess,
    committed,
    produce,
    read_topic,
    stream,
    topic_size,
    wait_until,
)
from tests.servers import case_store_logins, free_port, http_receiver, postgres_server

pytestmark = pytest.mark.integration
LABELS = "labels"
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def fresh_database(postgres_url: str, name: str) -> str:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


def count(dsn: str, sql: str, *params: Any) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return int(conn.execute(sql, params).fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return -1


def decision(i: int, action: str = "review", **changes: Any) -> tuple[bytes, bytes]:
    body = {
        "transaction_id": f"t{i}",
        "user_id": f"u{i % 7}",
        "action": action,
        "score": 0.95,
        "reasons": ["model"],
        "model_version": "m1",
        "rules_version": "r1",
        "detector": "it",
        "track": "stable",
        "event_time": 1_800_000_000.0 + i,
        "scored_at": 1_800_000_001.0 + i,
        "latency_ms": 3.0,
        "transaction": {"transaction_id": f"t{i}", "amount": 10.0 + i, "currency": "EUR"},
        **changes,
    }
    return f"t{i}".encode(), msgspec.json.encode(body)


def all_committed(bootstrap: str, group: str, topic: str) -> bool:
    ends = {p: hi for p, (_, hi) in enumerate(_watermarks(bootstrap, topic))}
    got = committed(bootstrap, group, topic)
    return all(got.get(p, -1) >= hi or hi == 0 for p, hi in ends.items())


def _watermarks(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-wm"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(4)]
    finally:
        c.close()


def test_decisions_reach_the_case_store_alerts_the_webhook_and_labels_come_back(
    cluster: MockCluster,
    tmp_path: Path,
    model_dir: Path,
    small_stream: pd.DataFrame,
    postgres_url: str,
) -> None:
    bootstrap = cluster.bootstrap_servers
    cluster.create_topic(LABELS, 2)
    dsn = fresh_database(postgres_url, "sinks_e2e")  # the schema owner's (migrations)
    runtime = case_store_logins(dsn)["sink"]  # the sink's own login: fraud_case_writer
    items = stream(small_stream.iloc[:4000])
    produce(bootstrap, TOPICS["input"], items)
    scorer = ScorerProcess(tmp_path, bootstrap, model_dir).start()
    with http_receiver() as hook:
        webhook = SinkProcess(
            tmp_path,
            bootstrap,
            "webhook",
            env={"FRAUD_WEBHOOK__URL": hook.url},
            webhook={"style": "json", "rate_per_s": 1000.0, "burst": 1000},
        ).start()
        cases = SinkProcess(
            tmp_path,
            bootstrap,
            "postgres",
            env={"FRAUD_POSTGRES__DSN": runtime, "FRAUD_POSTGRES__MIGRATION_DSN": dsn},
            labels_topic=LABELS,
        ).start()
        wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) == len(items), 120, "scores")
        alerts = read_topic(bootstrap, TOPICS["alerts"])
        assert alerts, "the stream should raise some alerts"
        wait_until(lambda: len(hook.bodies) == len(alerts), 60, "every alert posted")
        wait_until(lambda: count(dsn, "SELECT count(*) FROM cases") == len(items), 60, "cases")

        # Every alert posted once, as JSON, with the transaction it is about.
        assert sorted(hook.keys) == sorted(r.key.decode() for r in alerts)  # type: ignore[union-attr]
        assert all(b["transaction"]["transaction_id"] == b["transaction_id"] for b in hook.bodies)
        alerted = count(
            dsn, "SELECT count(*) FROM cases WHERE action <> 'allow' AND transaction IS NOT NULL"
        )
        assert alerted == len(alerts)
        assert count(dsn, "SELECT count(*) FROM audit WHERE kind = 'decision'") == len(items)
        assert count(dsn, "SELECT count(*) FROM audit WHERE kind = 'serving'") == 1

        # An analyst labels one alerted case and one the store has not seen (yet).
        first = alerts[0].key.decode()  # type: ignore[union-attr]
        cli = Path(sys.executable).parent / "fraud-cases"
        for tx, verdict in ((first, "--fraud"), ("t-later", "--legit")):
            done = subprocess.run(
                [
                    cli,
                    "label",
                    tx,
                    verdict,
                    "--by",
                    "alice",
                    "--kafka",
                    bootstrap,
                    "--topic",
                    LABELS,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        wait_until(
            lambda: count(dsn, "SELECT count(*) FROM cases WHERE label = 1") == 1, 30, "label"
        )
        # Relayed through Kafka: recorded by the sink's login, with alice's name as a claim.
        authors = "SELECT count(*) FROM cases WHERE labelled_by = 'sink' AND label_claimed_by = %s"
        assert count(dsn, authors, "alice") == 1
        wait_until(lambda: count(dsn, "SELECT count(*) FROM pending_labels") == 1, 30, "pending")
        produce(bootstrap, TOPICS["decisions"], [decision(0, "allow", transaction_id="t-later")])
        wait_until(
            lambda: count(dsn, "SELECT count(*) FROM cases WHERE label = 0") == 1, 30, "applied"
        )

        # Redelivered alerts (at-least-once upstream): nothing posted twice, no new audit rows.
        produce(bootstrap, TOPICS["alerts"], [(r.key, r.value) for r in alerts])  # type: ignore[misc]
        wait_until(
            lambda: webhook.metric("fraud_sink_messages_total", outcome="duplicate") == len(alerts),
            30,
            "duplicates recognised",
        )
        assert len(hook.bodies) == len(alerts)

        # A message no sink can read is dead-lettered by each, with its reason and bytes.
        produce(bootstrap, TOPICS["alerts"], [(b"bad", b"{not json")])
        wait_until(
            lambda: (
                sum(r.value == b"{not json" for r in read_topic(bootstrap, TOPICS["dead_letter"]))
                == 2
            ),
            30,
            "dead letters",
        )
        dead = [r for r in read_topic(bootstrap, TOPICS["dead_letter"]) if r.key == b"bad"]
        assert {r.headers["dlq.sink"] for r in dead} == {b"webhook", b"postgres"}
        assert {r.headers["dlq.reason"] for r in dead} == {b"undecodable"}
        assert webhook.metric("fraud_sink_delivery_seconds_count") == len(alerts)
        assert cases.metric("fraud_sink_labels_total", result="applied") >= 1
        wait_until(
            lambda: (
                count(dsn, "SELECT count(*) FROM audit WHERE kind = 'decision'") == len(items) + 1
            ),
            30,
            "t-later audited",
        )
        assert webhook.stop() == 0 and cases.stop() == 0
    scorer.stop()
    for group, topic in (
        ("it-sink-webhook", TOPICS["alerts"]),
        ("it-sink-postgres", TOPICS["alerts"]),
        ("it-sink-postgres", TOPICS["decisions"]),
    ):
        assert all_committed(bootstrap, group, topic), (group, topic)


def test_a_dead_webhook_opens_the_circuit_and_dead_letters_every_alert(
    cluster: MockCluster, tmp_path: Path
) -> None:
    bootstrap = cluster.bootstrap_servers
    with http_receiver() as hook:
        hook.script = [503] * 1000
        webhook = SinkProcess(
            tmp_path,
            bootstrap,
            "webhook",
            env={"FRAUD_WEBHOOK__URL": hook.url},
            webhook={
                "max_attempts": 2,
                "backoff_base_s": 0.01,
                "failure_threshold": 2,
                "open_seconds": 600,
            },
        ).start()
        produce(bootstrap, TOPICS["alerts"], [decision(i) for i in range(50)])
        wait_until(
            lambda: topic_size(bootstrap, TOPICS["dead_letter"]) == 50, 60, "all dead-lettered"
        )
        dead = read_topic(bootstrap, TOPICS["dead_letter"])
        details = {r.headers["dlq.detail"] for r in dead}
        assert details == {b"HTTP 503", b"circuit open"}
        assert all(r.headers["dlq.reason"] == b"webhook_undeliverable" for r in dead)
        assert sorted(r.value for r in dead) == sorted(
            v for _, v in (decision(i) for i in range(50))
        )
        assert hook.posts == 4  # 2 alerts x 2 attempts, then the circuit stays open
        assert webhook.metric("fraud_sink_circuit_open") == 1
        assert webhook.metric("fraud_sink_failures_total") == 50
        assert webhook.metric("fraud_sink_retries_total") == 2
        assert webhook.stop() == 0
    assert all_committed(bootstrap, "it-sink-webhook", TOPICS["alerts"])


def test_the_case_store_rides_out_a_database_outage_and_refuses_only_bad_rows(
    cluster: MockCluster, tmp_path: Path
) -> None:
    bootstrap = cluster.bootstrap_servers
    port = free_port()
    dsn = f"postgresql://fraud@127.0.0.1:{port}/postgres"  # nothing listens there yet
    env = {"FRAUD_POSTGRES__DSN": dsn, "FRAUD_POSTGRES__MIGRATION_DSN": dsn}
    cases = SinkProcess(tmp_path, bootstrap, "postgres", env=env, batch={"retry_max_s": 1}).start(
        wait_ready=False
    )
    rows = [decision(i, "allow") for i in range(300)]
    rows.append(decision(999, "review", user_id="nul\u0000byte"))  # PostgreSQL text has no NUL
    rows.append(decision(998, "deny"))  # the CHECK on action: an IntegrityError
    rows.append(decision(997, "review", event_time=1e300))  # no such timestamp: OverflowError
    produce(bootstrap, TOPICS["decisions"], rows)
    wait_until(lambda: cases.metric("fraud_sink_failures_total") >= 2, 60, "retries")
    assert cases.proc is not None and cases.proc.poll() is None  # waiting, not crashing
    assert cases.get("/readyz")[0] == 503
    with postgres_server(port=port):
        wait_until(lambda: count(dsn, "SELECT count(*) FROM cases") == 300, 60, "rows written")
        wait_until(lambda: topic_size(bootstrap, TOPICS["dead_letter"]) == 3, 30, "refused rows")
        refused = read_topic(bootstrap, TOPICS["dead_letter"])
        assert sorted(r.key for r in refused if r.key) == [b"t997", b"t998", b"t999"]
        assert {r.headers["dlq.reason"] for r in refused} == {b"case_store_refused"}
        wait_until(cases.ready, 30, "ready once the database is back")
        assert cases.stop() == 0
    assert all_committed(bootstrap, "it-sink-postgres", TOPICS["decisions"])


# Runs fraud-sink's own entry point and records, at exit, whether the scorer's heavy
# dependencies were ever imported.
_HEAVY_PROBE = """
import sys
from fraud_sinks.__main__ import main
code = main(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'onnxruntime'})
print('heavy modules loaded:', heavy or 'none', flush=True)
sys.exit(code)
"""


class ProbedSink(SinkProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-c", _HEAVY_PROBE, "--config", str(self.config_path)]


def test_a_sink_runs_without_numpy_or_onnxruntime(cluster: MockCluster, tmp_path: Path) -> None:
    """The sinks share the scorer's image but not its hot path: a webhook sink delivers and
    stops cleanly without ever importing numpy or onnxruntime (import contracts keep the
    code apart; this proves the running process)."""
    bootstrap = cluster.bootstrap_servers
    with http_receiver() as receiver:
        sink = ProbedSink(tmp_path, bootstrap, "webhook", env={"FRAUD_WEBHOOK__URL": receiver.url})
        sink.start()
        produce(bootstrap, TOPICS["alerts"], [decision(i) for i in range(5)])
        wait_until(lambda: receiver.posts >= 5, 60, "five alerts posted")
        assert sink.stop() == 0, sink.log()[-2000:]
    assert "heavy modules loaded: none" in sink.log(), sink.log()[-2000:]


def test_a_webhook_sink_killed_mid_batch_re_posts_at_most_the_alert_in_flight(
    cluster: MockCluster, tmp_path: Path
) -> None:
    """SIGKILL twice while a rate-limited batch is being posted. Each alert's offset is
    committed once it is delivered, so a successor re-posts at most the alert in flight per
    kill (it re-posted the whole uncommitted batch before: its remembered ids die with it)."""
    import collections
    import signal as signals

    bootstrap = cluster.bootstrap_servers
    alerts = [decision(i) for i in range(160)]
    produce(bootstrap, TOPICS["alerts"], alerts)
    kills = 0
    with http_receiver() as receiver:
        overrides = {"webhook": {"rate_per_s": 40.0, "burst": 1}}
        for _ in range(2):
            sink = SinkProcess(
                tmp_path,
                bootstrap,
                "webhook",
                env={"FRAUD_WEBHOOK__URL": receiver.url},
                **overrides,
            ).start()
            before = receiver.posts
            wait_until(lambda: receiver.posts >= before + 30, 60, "posting under way")  # noqa: B023
            sink.stop(signals.SIGKILL)
            kills += 1
        sink = SinkProcess(
            tmp_path, bootstrap, "webhook", env={"FRAUD_WEBHOOK__URL": receiver.url}, **overrides
        ).start()
        wait_until(lambda: len(set(receiver.keys)) == len(alerts), 90, "every alert posted")
        assert sink.stop() == 0
        posts = collections.Counter(receiver.keys)
    duplicates = sum(n - 1 for n in posts.values())
    print(f"\nwebhook sink killed x{kills}: {len(posts)} alerts, {duplicates} re-posted")
    assert duplicates <= kills
    assert all_committed(bootstrap, "it-sink-webhook", TOPICS["alerts"])


def test_a_running_webhook_sink_posts_alerts_with_header_hostile_ids(
    cluster: MockCluster, tmp_path: Path
) -> None:
    """CR/LF and non-Latin-1 transaction ids reach a real sink process: each alert is posted
    once, with a hashed Idempotency-Key, and the sink goes on (it died on the first before)."""
    bootstrap = cluster.bootstrap_servers
    ids = ["t\r\nX-Injected: 1", "t-é-中文", "plain-1"]
    with http_receiver() as receiver:
        sink = SinkProcess(
            tmp_path, bootstrap, "webhook", env={"FRAUD_WEBHOOK__URL": receiver.url}
        ).start()
        produce(
            bootstrap, TOPICS["alerts"], [decision(i, transaction_id=t) for i, t in enumerate(ids)]
        )
        wait_until(lambda: receiver.posts >= len(ids), 60, "every alert posted")
        assert "plain-1" in receiver.keys
        # An alert with W3C trace context is posted with it, as HTTP headers.
        produce(bootstrap, TOPICS["alerts"], [decision(9, transaction_id="traced")],
                headers=[("traceparent", TRACEPARENT), ("tracestate", b"a=b")])  # fmt: skip
        wait_until(lambda: "traced" in receiver.keys, 60, "the traced alert posted")
        assert receiver.traces[receiver.keys.index("traced")] == TRACEPARENT.decode()
        assert receiver.traces[receiver.keys.index("plain-1")] is None
        # A hostile tracestate (CR/LF) is dropped, not made an HTTP header: the alert goes out.
        hostile = [("traceparent", TRACEPARENT), ("tracestate", b"a=b\r\nX-Injected: 1")]
        produce(bootstrap, TOPICS["alerts"], [decision(10, transaction_id="traced-2")],
                headers=hostile)  # fmt: skip
        wait_until(lambda: "traced-2" in receiver.keys, 60, "the hostile-state alert posted")
        assert receiver.traces[receiver.keys.index("traced-2")] == TRACEPARENT.decode()
        assert sum(k.startswith("sha256:") for k in receiver.keys) == 2
        assert sink.proc is not None and sink.proc.poll() is None
        assert sink.stop() == 0
    assert all_committed(bootstrap, "it-sink-webhook", TOPICS["alerts"])


def test_without_an_owner_login_the_case_store_sink_waits_for_the_schema(
    cluster: MockCluster, tmp_path: Path, postgres_url: str
) -> None:
    """The runtime login cannot migrate (no DDL). Given no migration DSN, the sink is alive but
    not ready, says why, and starts writing once the owner runs `fraud-cases migrate`."""
    bootstrap = cluster.bootstrap_servers
    owner = fresh_database(postgres_url, "sinks_unmigrated")
    runtime = case_store_logins(owner)["sink"]
    cases = SinkProcess(
        tmp_path, bootstrap, "postgres", env={"FRAUD_POSTGRES__DSN": runtime},
        batch={"retry_max_s": 1},
    ).start(wait_ready=False)  # fmt: skip
    produce(bootstrap, TOPICS["decisions"], [decision(i, "allow") for i in range(20)])
    wait_until(lambda: cases.get("/readyz")[0] == 503, 30, "not ready")
    wait_until(lambda: "not migrated" in cases.get("/readyz")[1], 30, "the reason")
    assert cases.proc is not None and cases.proc.poll() is None
    cli = Path(sys.executable).parent / "fraud-cases"
    done = subprocess.run(
        [cli, "migrate", "--dsn", owner], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    wait_until(lambda: count(owner, "SELECT count(*) FROM cases") == 20, 60, "rows written")
    wait_until(lambda: cases.get("/readyz")[0] == 200, 30, "ready")
    assert cases.stop() == 0
