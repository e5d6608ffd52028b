"""Everything hostile at once, against real processes: two scorers, a webhook sink with the
shipped rate limits and a case-store sink on its own least-privilege login, on librdkafka's
mock cluster, a real PostgreSQL, a real HTTP destination and a real Prometheus with the
chart's alert rules.

While traffic flows: messages near the broker's limit and over the scorer's, malformed ones,
header-hostile ids, rows the database refuses, ReDoS and memory-bomb rules, the dead-letter
topic's broker down for 30 s, the webhook answering 503 for two minutes, a second scorer
joining (a slow broker makes its state rebuild long) with a model that fails on most batches,
and ``kill -9`` of each sink mid-batch. Then every message is reconciled.

Figures it prints (``pytest -s``) are recorded in docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from fraud_devtools.local import wait_until
from fraud_devtools.mock_cluster import MockCluster
from fraud_sinks.webhook import idempotency_key
from fraud_training.synth import SynthConfig, generate

from tests.integration.harness import (
    TOPICS,
    Record,
    ScorerProcess,
    SinkProcess,
    committed,
    produce,
    read_topic,
    stream,
)
from tests.integration.test_model_failure import (
    ALERT_RULES,
    alerts,
    model_that_fails_on_most_batches,
)
from tests.servers import case_store_logins, http_receiver, prometheus_server

pytestmark = pytest.mark.integration
HOSTILE_RULES = [
    {"name": "risky-merchant", "expression": "tx.merchant in ['XYZ_Merchant', 'UnknownShop']"},
    {"name": "redos", "expression": "tx.merchant.matches('^(a+)+$')"},
    {"name": "bomb", "expression": "size(tx.attributes['s'] * 1000000000) > 0"},
]
WEBHOOK_DOWN_S = 120
DLQ_DOWN_S = 30


def hostile_inputs(template: dict[str, Any]) -> tuple[list[tuple[bytes, bytes]], set[bytes]]:
    """(messages, keys of those that must be dead-lettered by the scorer); the others must be
    decided."""

    def tx(key: str, **changes: Any) -> tuple[bytes, bytes]:
        return key.encode(), msgspec.json.encode({**template, **changes})

    near = b'{"transaction_id": "' + b"x" * 999_900 + b'"}'
    undecidable = [
        (b"near-limit", near + b" " * (999_950 - len(near))),  # near the broker's limit
        tx("over-limit", transaction_id="over-limit", attributes={"pad": "x" * 100_000}),
        (b"not-json", b"{not json"),
        (b"no-fields", b'{"transaction_id": "no-fields"}'),
    ]
    decidable = [
        tx("crlf", transaction_id="t\r\nX-Injected: 1", merchant="XYZ_Merchant"),
        tx("unicode", transaction_id="t-\u00e9-\u4e2d\u6587", merchant="XYZ_Merchant"),
        tx("nul", transaction_id="nul-user", user_id="nul\u0000byte", merchant="XYZ_Merchant"),
        *(
            tx(f"redos-{i}", transaction_id=f"redos-{i}", merchant="a" * 255 + "b")
            for i in range(10)
        ),
        *(tx(f"bomb-{i}", transaction_id=f"bomb-{i}", attributes={"s": "xy"}) for i in range(10)),
    ]
    return undecidable + decidable, {k for k, _ in undecidable}


def alerting(items: list[tuple[bytes, bytes]], prefix: str) -> list[tuple[bytes, bytes]]:
    """The same transactions at a risky merchant (the rule alerts on each), with new ids."""
    out = []
    for key, value in items:
        tx = msgspec.json.decode(value)
        tx.update(transaction_id=f"{prefix}-{tx['transaction_id']}", merchant="XYZ_Merchant")
        out.append((key, msgspec.json.encode(tx)))
    return out


def total_committed(bootstrap: str, group: str, topic: str) -> int:
    return sum(max(o, 0) for o in committed(bootstrap, group, topic).values())


def source(record: Record) -> str:
    return record.headers.get("dlq.source.topic", b"").decode()


def test_everything_hostile_at_once_loses_nothing_and_restarts_nothing(
    tmp_path: Path, model_dir: Path, postgres_url: str
) -> None:
    frame = generate(SynthConfig(users=1500, days=2.0, seed=77))
    items = stream(frame.iloc[:8000])
    hostile, undecidable = hostile_inputs(msgspec.json.decode(items[0][1]))
    late_alerts = alerting(items[:150], "late")
    broken_model = model_that_fails_on_most_batches(model_dir, tmp_path / "broken-model")
    owner = postgres_url.rsplit("/", 1)[0] + "/hostile"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS hostile")
        admin.execute("CREATE DATABASE hostile")
    sink_login = case_store_logins(owner)["sink"]

    with MockCluster(brokers=2) as cluster, http_receiver() as hook:
        bootstrap = cluster.bootstrap_servers
        for topic in TOPICS.values():
            cluster.create_topic(topic, 4)
            for p in range(4):  # the dead-letter topic alone on broker 2
                cluster.set_leader(topic, p, 2 if topic == TOPICS["dead_letter"] else 1)
        for group in ("fraud-scorer", "it-sink-webhook", "it-sink-postgres"):
            cluster.set_coordinator(group, 2 if group == "fraud-scorer" else 1)
        a = ScorerProcess(tmp_path, bootstrap, model_dir, name="a", rules=HOSTILE_RULES)
        b = ScorerProcess(
            tmp_path,
            bootstrap,
            broken_model,
            name="b",
            rules=HOSTILE_RULES,
            # small fetches: with the slow broker below, its state rebuild takes a while
            kafka={**a.config["kafka"], "extra": {
                **a.config["kafka"]["extra"], "max.partition.fetch.bytes": 8192}},
        )  # fmt: skip
        webhook = SinkProcess(tmp_path, bootstrap, "webhook", env={"FRAUD_WEBHOOK__URL": hook.url})
        cases = SinkProcess(
            tmp_path,
            bootstrap,
            "postgres",
            env={"FRAUD_POSTGRES__DSN": sink_login, "FRAUD_POSTGRES__MIGRATION_DSN": owner},
        )
        targets = [f"127.0.0.1:{p.port}" for p in (a, b)]
        with prometheus_server(targets, rule_files=[ALERT_RULES]) as prom:
            a.start()
            webhook.start()
            cases.start()
            started = time.monotonic()

            # Phase 1: the dead-letter topic and the webhook are down; hostile input arrives.
            hook.down = True
            cluster.broker_down(2)
            produce(bootstrap, TOPICS["input"], hostile + items[:4000])
            health = []
            while time.monotonic() - started < DLQ_DOWN_S:
                health.append(a.get("/healthz")[0])
                time.sleep(1)
            cluster.broker_up(2)
            assert set(health) == {200}, health  # alive throughout: no liveness restart

            # Phase 2: scale-out onto a slow broker; the newcomer's model fails.
            wait_until(
                lambda: (
                    total_committed(bootstrap, "fraud-scorer", TOPICS["input"])
                    >= len(hostile) + 4000
                ),
                120,
                "phase 1 committed",
            )
            cluster.set_rtt(1, 60)
            b.start(wait_ready=False)
            ages, rebuilding = [], True
            rebuild_started = time.monotonic()
            while rebuilding and time.monotonic() - rebuild_started < 120:
                status, body = b.get("/healthz")
                if status:
                    ages.append(float(body.split()[2].rstrip("s")))
                rebuilding = "state rebuilt" not in b.log() or not b.ready()
                time.sleep(0.5)
            rebuild_s = time.monotonic() - rebuild_started
            cluster.set_rtt(1, 0)
            wait_until(b.ready, 60, "b ready")
            produce(bootstrap, TOPICS["input"], items[4000:])

            # Phase 3: the webhook comes back after two minutes; more alerts; kill -9 sinks.
            wait_until(lambda: time.monotonic() - started >= WEBHOOK_DOWN_S, 200, "2 minutes")
            hook.down = False
            produce(bootstrap, TOPICS["input"], late_alerts)
            kills = 0
            for victim in (webhook, cases):
                before = hook.posts
                if victim is webhook:
                    wait_until(lambda: hook.posts >= before + 10, 120, "posting again")  # noqa: B023
                victim.stop(signal.SIGKILL)
                kills += victim is webhook
                victim.start()

            # Everything settles: every input offset committed, every output consumed.
            produced = len(hostile) + len(items) + len(late_alerts)
            wait_until(
                lambda: total_committed(bootstrap, "fraud-scorer", TOPICS["input"]) == produced,
                180,
                "every input committed",
            )
            decisions = read_topic(bootstrap, TOPICS["decisions"])
            alert_records = read_topic(bootstrap, TOPICS["alerts"])
            wait_until(
                lambda: (
                    total_committed(bootstrap, "it-sink-webhook", TOPICS["alerts"])
                    == len(alert_records)
                ),
                240,
                "every alert handled by the webhook sink",
            )
            wait_until(
                lambda: (
                    total_committed(bootstrap, "it-sink-postgres", TOPICS["decisions"])
                    == len(decisions)
                ),
                120,
                "every decision handled by the case store",
            )
            scoring_alert = alerts(prom, "FraudScoringErrors")

        for proc in (a, b, webhook, cases):
            assert proc.proc is not None and proc.proc.poll() is None, proc.log()[-2000:]
        restarts = {
            p.log_path.stem: p.log().count("metrics listening") for p in (a, b, webhook, cases)
        }
        b_errors = b.metric("fraud_scoring_errors_total")
        bomb_errors = a.metric("fraud_rule_errors_total", rule="bomb") + b.metric(
            "fraud_rule_errors_total", rule="bomb"
        )
        for proc in (a, b, webhook, cases):
            assert proc.stop() == 0
        dead = read_topic(bootstrap, TOPICS["dead_letter"])
        posts = Counter(hook.keys)
        with psycopg.connect(owner) as conn:
            stored = {r[0] for r in conn.execute("SELECT transaction_id FROM cases")}

    # The scorers: every message decided or dead-lettered, never both, nothing lost.
    decided = {r.key for r in decisions if r.key is not None}
    scorer_dead = {r.key for r in dead if source(r) == TOPICS["input"]}
    expected_decided = {
        msgspec.json.decode(v)["transaction_id"].encode()
        for k, v in [*hostile, *items, *late_alerts]
        if k not in undecidable
    }
    assert decided == expected_decided
    assert scorer_dead == undecidable
    assert len(decided) + len(scorer_dead) == produced
    stub = next(r for r in dead if r.key == b"near-limit")
    assert stub.headers["dlq.stub"] == b"true"
    assert stub.headers["dlq.original.sha256"] == hashlib.sha256(hostile[0][1]).hexdigest().encode()
    # The webhook: every alert posted or, while the webhook was down, dead-lettered.
    alerted = {r.key for r in alert_records if r.key is not None}
    hook_dead = {
        r.key
        for r in dead
        if source(r) == TOPICS["alerts"] and r.headers["dlq.reason"] != b"case_store_refused"
    }
    by_header = {idempotency_key(k.decode()): k for k in alerted}
    posted_ids = {by_header[k] for k in posts}
    assert posted_ids | hook_dead == alerted, (len(posted_ids), len(hook_dead), len(alerted))
    assert not posted_ids & hook_dead
    assert {"sha256:" + hashlib.sha256(b"t\r\nX-Injected: 1").hexdigest()} <= set(posts) or (
        b"t\r\nX-Injected: 1" in hook_dead
    )  # a header-hostile id is posted under its hash (or was dead-lettered in the outage)
    duplicates = sum(n - 1 for n in posts.values())
    assert duplicates <= kills  # at most the alert in flight per kill, same Idempotency-Key
    assert {k for k in posted_ids if k.startswith(b"late-")}, "posting resumed after the outage"
    # The case store: every decision stored, except the row PostgreSQL refuses.
    refused = {r.key for r in dead if r.headers.get("dlq.reason") == b"case_store_refused"}
    assert refused == {b"nul-user"}
    assert {k.encode() for k in stored} | refused == decided
    # Rules, model and processes.
    assert bomb_errors >= 10
    assert b_errors >= 1 and scoring_alert, "the model's failures counted and alerted"
    bodies = [msgspec.json.decode(r.value or b"") for r in decisions]
    fallback = [d for d in bodies if "model_error" in d["reasons"]]
    assert fallback and all(d["score"] == 0.0 for d in fallback)
    assert max(ages) < 5.0, f"b's loop heartbeat went {max(ages):.1f}s stale during its rebuild"
    assert restarts == {"a": 1, "b": 1, "sink-webhook": 2, "sink-postgres": 2}, restarts
    print(
        f"\nhostile run: {produced} messages -> {len(decided)} decided + {len(scorer_dead)} "
        f"dead-lettered by the scorers; {len(alerted)} alerts -> {len(posted_ids)} posted + "
        f"{len(hook_dead)} dead-lettered while the webhook was down, {duplicates} re-posted "
        f"after {kills} kill(s); {len(stored)} cases + {len(refused)} refused row(s); "
        f"scale-out rebuild {rebuild_s:.1f}s with the heartbeat at most {max(ages):.1f}s old; "
        f"{int(b_errors)} failed model batches on b ({len(fallback)} decisions by fallback); "
        f"{int(bomb_errors)} bomb rule errors; total {time.monotonic() - started:.0f}s"
    )
