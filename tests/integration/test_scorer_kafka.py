"""The real scorer process against a real Kafka protocol server, end to end."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import msgspec
import pandas as pd
import pytest
from confluent_kafka import KafkaException
from fraud_devtools.mock_cluster import MockCluster

from tests.integration.harness import (
    TOPICS,
    ScorerProcess,
    committed,
    produce,
    read_topic,
    reference_features,
    stream,
    topic_size,
    wait_until,
)

pytestmark = pytest.mark.integration

MALFORMED = [
    (b"k1", b"not json"),
    (b"k2", b'{"transaction_id": "x"}'),
    (b"k3", b"\xc3\x28 invalid utf-8"),
    (
        b"k4",
        b'{"transaction_id":"n","user_id":"u","amount":-3,"currency":"EUR",'
        b'"timestamp":"2026-11-01T00:00:00Z","merchant":"m","merchant_category":"c",'
        b'"channel":"pos","location":"DE","device_id":"d"}',
    ),
]


TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def decisions_by_id(bootstrap: str) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for rec in read_topic(bootstrap, TOPICS["decisions"]):
        d = msgspec.json.decode(rec.value)
        assert rec.key == d["transaction_id"].encode()
        out.setdefault(d["transaction_id"], []).append(d)
    return out


def test_scores_a_stream_end_to_end(
    cluster: MockCluster, tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    shell = small_stream["merchant"].isin(["XYZ_Merchant", "UnknownShop"]).to_numpy()
    start = max(int(shell.argmax()) - 1500, 0)  # a window with shell-merchant payments in it
    head = small_stream.iloc[start : start + 3000]
    items = stream(head)
    scorer = ScorerProcess(tmp_path, cluster.bootstrap_servers, model_dir).start()
    # W3C trace context on a share of the input (and a broken one on another share): each
    # decision, alert and dead letter made from a traced message carries its trace.
    # (The traced share is the window's middle, where the shell-merchant payments are.)
    trace = [("traceparent", TRACEPARENT), ("tracestate", b"vendor=abc")]
    traced = items[1300:1700]
    bootstrap = cluster.bootstrap_servers
    produce(bootstrap, TOPICS["input"], items[:1200])
    produce(bootstrap, TOPICS["input"], items[1200:1300], headers=[("traceparent", b"00-x-01")])
    produce(bootstrap, TOPICS["input"], traced, headers=trace)
    produce(bootstrap, TOPICS["input"], items[1700:])
    produce(bootstrap, TOPICS["input"], MALFORMED, headers=trace)
    wait_until(
        lambda: (
            topic_size(bootstrap, TOPICS["decisions"]) >= len(items)
            and topic_size(bootstrap, TOPICS["dead_letter"]) >= len(MALFORMED)
        ),
        60,
        "all outputs",
    )

    decisions = decisions_by_id(bootstrap)
    assert len(decisions) == len(items)
    actions = {d[0]["action"] for d in decisions.values()}
    assert "allow" in actions
    risky = head.loc[head["merchant"].isin(["XYZ_Merchant", "UnknownShop"]), "transaction_id"]
    assert len(risky) > 0
    for tid in risky:
        assert "risky-merchant" in decisions[tid][0]["reasons"]  # type: ignore[operator]
    alerts = read_topic(bootstrap, TOPICS["alerts"])
    assert {r.key.decode() for r in alerts if r.key} == {
        t for t, ds in decisions.items() if ds[0]["action"] != "allow"
    }

    traced_ids = {msgspec.json.decode(v)["transaction_id"] for _, v in traced}
    for rec in [*read_topic(bootstrap, TOPICS["decisions"]), *alerts]:
        carried = rec.headers.get("traceparent")
        assert carried == (TRACEPARENT if rec.key.decode() in traced_ids else None)  # type: ignore[union-attr]
        if carried:
            assert rec.headers["tracestate"] == b"vendor=abc"
    assert any(r.key.decode() in traced_ids for r in alerts)  # type: ignore[union-attr]

    dead = {r.key: r for r in read_topic(bootstrap, TOPICS["dead_letter"])}
    assert all(r.headers["traceparent"] == TRACEPARENT for r in dead.values())
    assert {k: r.headers["dlq.reason"] for k, r in dead.items()} == {
        b"k1": b"invalid_json",
        b"k2": b"missing_field",
        b"k3": b"invalid_encoding",
        b"k4": b"invalid_amount",
    }
    assert all(dead[k].value == v for k, v in MALFORMED)  # original bytes kept

    assert scorer.metric("fraud_transactions_total") == len(items)
    assert scorer.metric("fraud_dead_letters_total", reason="invalid_json") == 1
    assert scorer.metric("fraud_event_to_decision_seconds_count") == len(items)
    assert scorer.metric("fraud_model_info", model_version="test-1") == 1
    assert scorer.metric("fraud_rule_hits_total", rule="risky-merchant") == len(risky)
    assert scorer.get("/healthz")[0] == 200
    wait_until(lambda: "fraud_consumer_lag{" in scorer.get("/metrics")[1], 15, "lag gauge")
    wait_until(lambda: scorer.metric("fraud_consumer_lag") == 0, 15, "the lag to reach 0")
    assert scorer.stop() == 0
    assert "4111" not in scorer.log()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_restart_loses_nothing_and_features_match_an_uninterrupted_run(
    cluster: MockCluster,
    tmp_path: Path,
    model_dir: Path,
    small_stream: pd.DataFrame,
    how: signal.Signals,
) -> None:
    items = stream(small_stream.iloc[:12000])
    bootstrap = cluster.bootstrap_servers
    produce(bootstrap, TOPICS["input"], items)
    first = ScorerProcess(
        tmp_path, bootstrap, model_dir, name="first", batch={"max_messages": 200}
    ).start()
    wait_until(
        lambda: (
            sum(committed(bootstrap, "fraud-scorer", TOPICS["input"]).values()) >= len(items) // 3
        ),
        60,
        "a third of the input committed",
    )
    code = first.stop(how)
    assert code == (0 if how == signal.SIGTERM else -signal.SIGKILL)

    second = ScorerProcess(tmp_path, bootstrap, model_dir, name="second").start()
    wait_until(
        lambda: len(decisions_by_id(bootstrap)) >= len(items), 90, "every transaction decided"
    )
    assert second.metric("fraud_state_replayed_messages_total") > 0
    assert second.stop() == 0

    reference = reference_features(items)
    decisions = decisions_by_id(bootstrap)
    assert decisions.keys() == reference.keys()  # nothing lost
    for tid, copies in decisions.items():
        for d in copies:  # duplicates (at-least-once) are recognisable and identical in substance
            assert d["features"] == reference[tid], tid
    if how == signal.SIGTERM:
        assert sum(len(c) for c in decisions.values()) == len(
            items
        )  # a clean stop re-sends nothing


def test_rebalance_between_two_scorers_keeps_features_identical(
    cluster: MockCluster,
    tmp_path: Path,
    model_dir: Path,
    small_stream: pd.DataFrame,
) -> None:
    items = stream(small_stream.iloc[:12000])
    bootstrap = cluster.bootstrap_servers
    a = ScorerProcess(tmp_path, bootstrap, model_dir, name="a", batch={"max_messages": 200}).start()
    produce(bootstrap, TOPICS["input"], items[:6000])
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 6000, 60, "first half")
    # b must find committed offsets to rebuild from (without them it re-scores from the start,
    # which is also correct but does not exercise the replay)
    wait_until(
        lambda: sum(committed(bootstrap, "fraud-scorer", TOPICS["input"]).values()) >= 6000,
        30,
        "the first half committed",
    )
    b = ScorerProcess(tmp_path, bootstrap, model_dir, name="b").start()  # partitions move to b
    wait_until(lambda: b.metric("fraud_state_users") > 0, 60, "b to own partitions")
    produce(bootstrap, TOPICS["input"], items[6000:])
    wait_until(
        lambda: len(decisions_by_id(bootstrap)) >= len(items), 90, "every transaction decided"
    )
    assert b.metric("fraud_state_replayed_messages_total") > 0
    assert a.stop() == 0 and b.stop() == 0
    reference = reference_features(items)
    decisions = decisions_by_id(bootstrap)
    assert decisions.keys() == reference.keys()
    assert all(d["features"] == reference[t] for t, ds in decisions.items() for d in ds)


def test_a_new_candidate_track_starts_where_stable_is_with_warm_features(
    cluster: MockCluster,
    tmp_path: Path,
    model_dir: Path,
    small_stream: pd.DataFrame,
) -> None:
    """A canary or shadow track is a new consumer group. From the log's start it would decide
    its slice of the whole retained log again (alerts included): it starts at stable's
    committed offsets instead (``kafka.start_from_group``, set by the operator), with the
    features of what came before rebuilt by replay."""
    items = stream(small_stream.iloc[:8000])
    bootstrap = cluster.bootstrap_servers
    stable = ScorerProcess(
        tmp_path, bootstrap, model_dir, name="stable", group="g-stable", track="stable"
    ).start()
    produce(bootstrap, TOPICS["input"], items[:5000])
    wait_until(
        lambda: sum(committed(bootstrap, "g-stable", TOPICS["input"]).values()) >= 5000,
        60,
        "stable past the first 5,000",
    )
    assert stable.stop() == 0
    shadow_topic = {**TOPICS, "decisions": "decisions-shadow"}
    shadow = ScorerProcess(
        tmp_path, bootstrap, model_dir, name="shadow", group="g-shadow", track="shadow",
        topics=shadow_topic, output={"alerts": False, "dead_letters": False},
    )  # fmt: skip
    shadow.config["kafka"]["start_from_group"] = "g-stable"
    shadow.write_config()
    shadow.start()
    produce(bootstrap, TOPICS["input"], items[5000:])

    def decided() -> int:
        try:
            return topic_size(bootstrap, "decisions-shadow")
        except KafkaException:  # not created yet
            return 0

    wait_until(lambda: decided() >= 3000, 60, "the new 3,000 decided")
    assert shadow.metric("fraud_state_replayed_messages_total") >= 5000 * 0.9
    assert shadow.stop() == 0
    seen = [msgspec.json.decode(r.value) for r in read_topic(bootstrap, "decisions-shadow")]
    reference = reference_features(items)
    later = {msgspec.json.decode(v)["transaction_id"] for _, v in items[5000:]}
    assert {d["transaction_id"] for d in seen} == later  # none of the first 5,000 again
    assert all(d["features"] == reference[d["transaction_id"]] for d in seen)  # warm state


def test_rules_reload_without_restart_and_invalid_rules_keep_the_old_ones(
    cluster: MockCluster,
    tmp_path: Path,
    model_dir: Path,
    small_stream: pd.DataFrame,
) -> None:
    bootstrap = cluster.bootstrap_servers
    scorer = ScorerProcess(tmp_path, bootstrap, model_dir).start()
    produce(bootstrap, TOPICS["input"], stream(small_stream.iloc[:100]))
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 100, 30, "first batch")
    v1 = {d[0]["rules_version"] for d in decisions_by_id(bootstrap).values()}
    assert len(v1) == 1

    scorer.config["rules"] = [{"name": "everything", "expression": "tx.amount >= 0.0"}]
    scorer.write_config()
    wait_until(lambda: scorer.metric("fraud_rules_reloads_total", result="ok") == 1, 30, "reload")
    produce(bootstrap, TOPICS["input"], stream(small_stream.iloc[100:200]))
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 200, 30, "second batch")
    later = [
        d[0]
        for t, d in decisions_by_id(bootstrap).items()
        if t in set(small_stream["transaction_id"].iloc[100:200])
    ]
    assert all(d["reasons"][:1] == ["everything"] and d["action"] != "allow" for d in later)
    assert {d["rules_version"] for d in later}.isdisjoint(v1)

    scorer.config["rules"] = [{"name": "broken", "expression": "tx.amount > "}]
    scorer.write_config()
    wait_until(
        lambda: scorer.metric("fraud_rules_reloads_total", result="error") == 1, 30, "reject"
    )
    assert "rules reload rejected" in scorer.log() and "syntax error at column" in scorer.log()
    assert scorer.metric("fraud_rules_info", rules_version=later[0]["rules_version"]) == 1
    assert scorer.stop() == 0


def test_a_tampered_model_is_refused_at_start(
    cluster: MockCluster, tmp_path: Path, model_dir: Path
) -> None:
    bad = tmp_path / "bad-model"
    bad.mkdir()
    for f in model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes()[:-10])
    scorer = ScorerProcess(tmp_path, cluster.bootstrap_servers, bad).start(wait_ready=False)
    assert scorer.wait_exit() == 2
    assert "refusing model 'test-1'" in scorer.log() and "sha256" in scorer.log()


def test_sigterm_drains_and_commits_every_offset(
    cluster: MockCluster, tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    bootstrap = cluster.bootstrap_servers
    items = stream(small_stream.iloc[:5000])
    scorer = ScorerProcess(tmp_path, bootstrap, model_dir).start()
    produce(bootstrap, TOPICS["input"], items)
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 1000, 30, "scoring to start")
    assert scorer.stop(signal.SIGTERM) == 0
    ends = read_topic(bootstrap, TOPICS["input"])
    last = {}
    for r in ends:
        last[r.partition] = max(last.get(r.partition, 0), r.offset + 1)
    decided = len(decisions_by_id(bootstrap))
    offsets = committed(bootstrap, "fraud-scorer", TOPICS["input"])
    # everything committed was decided, and the commit covers everything decided
    assert sum(max(o, 0) for o in offsets.values()) == decided
    assert "stopped" in scorer.log()


def test_a_message_near_the_broker_limit_is_dead_lettered_as_a_stub_and_scoring_goes_on(
    cluster: MockCluster, tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    """A 999,950-byte message (brokers take up to about 1 MB) cannot come back as a dead letter
    with its headers added: the producer refused it and the scorer died, then each successor
    in turn. It is now a stub carrying the original's size and sha256."""
    import hashlib

    bootstrap = cluster.bootstrap_servers
    huge = b'{"transaction_id": "' + b"x" * 999_900 + b'"}'
    huge = huge + b" " * (999_950 - len(huge))
    items = stream(small_stream.iloc[:200])
    scorer = ScorerProcess(tmp_path, bootstrap, model_dir).start()
    produce(bootstrap, TOPICS["input"], [(b"huge", huge), *items])
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= len(items), 60, "decisions")
    wait_until(lambda: topic_size(bootstrap, TOPICS["dead_letter"]) >= 1, 30, "the stub")
    (stub,) = read_topic(bootstrap, TOPICS["dead_letter"])
    assert stub.key == b"huge"
    assert stub.headers["dlq.reason"] == b"oversize"
    assert stub.headers["dlq.stub"] == b"true"
    assert stub.headers["dlq.original.size"] == b"999950"
    assert stub.headers["dlq.original.sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert msgspec.json.decode(stub.value or b"")["size"] == 999_950
    assert scorer.proc is not None and scorer.proc.poll() is None  # alive: no crash loop
    assert scorer.stop() == 0
    offsets = committed(bootstrap, "fraud-scorer", TOPICS["input"])
    assert sum(max(o, 0) for o in offsets.values()) == 1 + len(items)  # everything committed


def test_an_output_too_large_for_the_producer_becomes_a_stub_dead_letter(
    cluster: MockCluster, tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    """With the input limit raised, a valid transaction carrying a 999.5 kB attribute makes an
    alert (which embeds the transaction) larger than the producer may send: the alert becomes
    an ``output_too_large`` stub on the dead-letter topic and the scorer goes on."""
    bootstrap = cluster.bootstrap_servers
    items = stream(small_stream.iloc[:100])
    tx = msgspec.json.decode(items[0][1])
    tx.update(transaction_id="big-1", merchant="XYZ_Merchant", attributes={"note": "x" * 999_500})
    scorer = ScorerProcess(
        tmp_path, bootstrap, model_dir, batch={"max_message_bytes": 2_000_000}
    ).start()
    produce(bootstrap, TOPICS["input"], [(b"big", msgspec.json.encode(tx)), *items])
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 1 + len(items), 60, "all")
    wait_until(lambda: topic_size(bootstrap, TOPICS["dead_letter"]) >= 1, 30, "the stub")
    (stub,) = read_topic(bootstrap, TOPICS["dead_letter"])
    assert stub.headers["dlq.reason"] == b"output_too_large"
    assert stub.headers["dlq.output.topic"] == TOPICS["alerts"].encode()
    assert int(stub.headers["dlq.original.size"]) > 1_000_000
    assert "big-1" in decisions_by_id(bootstrap)
    assert scorer.stop() == 0


def test_an_unavailable_dead_letter_topic_stalls_nothing_and_loses_nothing(
    tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    """The dead-letter topic's broker is down for 40 s (longer than liveness tolerates a stale
    heartbeat) while good and bad messages arrive. Scoring goes on, /healthz stays 200, the
    scorer says it is not ready and why; when the broker returns every dead letter lands and
    every offset is committed. Before, each loop waited 30 s in a flush and liveness killed it."""
    with MockCluster(brokers=2) as cluster:
        bootstrap = cluster.bootstrap_servers
        for topic in TOPICS.values():
            cluster.create_topic(topic, 4)
            for p in range(4):  # the dead-letter topic alone on broker 2
                cluster.set_leader(topic, p, 2 if topic == TOPICS["dead_letter"] else 1)
        cluster.set_coordinator("fraud-scorer", 1)
        scorer = ScorerProcess(tmp_path, bootstrap, model_dir).start()
        items = stream(small_stream.iloc[:2000])
        cluster.broker_down(2)
        produce(bootstrap, TOPICS["input"], items[:1000] + MALFORMED)
        wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 1000, 60, "decisions")
        health, ready = [], []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            health.append(scorer.get("/healthz")[0])
            ready.append(scorer.get("/readyz")[1])
            time.sleep(1)
        produce(bootstrap, TOPICS["input"], items[1000:])  # still scoring during the outage
        wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 2000, 60, "more")
        assert set(health) == {200}, health
        assert any("outputs unacknowledged" in r for r in ready), ready[-3:]
        cluster.broker_up(2)
        wait_until(
            lambda: topic_size(bootstrap, TOPICS["dead_letter"]) >= len(MALFORMED), 60, "DLQ"
        )
        wait_until(scorer.ready, 60, "ready again")
        wait_until(
            lambda: (
                sum(
                    max(o, 0)
                    for o in committed(bootstrap, "fraud-scorer", TOPICS["input"]).values()
                )
                == len(items) + len(MALFORMED)
            ),
            60,
            "every offset committed",
        )
        assert scorer.proc is not None and scorer.proc.poll() is None
        assert scorer.stop() == 0


def test_hostile_rules_never_stall_or_stop_a_running_scorer(
    cluster: MockCluster, tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    """A backtracking pattern on an attacker-chosen 256-character merchant and a memory-bomb
    multiplication on an attribute, in a real scorer: every transaction decided, the bomb
    counted as a rule error. Then a reload with a pathologically nested rule: rejected, the
    running rules stay, the process goes on."""
    bootstrap = cluster.bootstrap_servers
    rules = [
        {"name": "redos", "expression": "tx.merchant.matches('^(a+)+$')"},
        {"name": "bomb", "expression": "size(tx.attributes['s'] * 1000000000) > 0"},
    ]
    scorer = ScorerProcess(tmp_path, bootstrap, model_dir, rules=rules).start()
    items = stream(small_stream.iloc[:300])
    hostile = []
    for i in range(20):
        tx = msgspec.json.decode(items[i][1])
        tx.update(transaction_id=f"hostile-{i}", merchant="a" * 255 + "b", attributes={"s": "xy"})
        hostile.append((f"h{i}".encode(), msgspec.json.encode(tx)))
    produce(bootstrap, TOPICS["input"], hostile + items)
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 320, 60, "all decided")
    assert scorer.metric("fraud_rule_errors_total", rule="bomb") >= 20
    assert scorer.metric("fraud_rule_hits_total", rule="redos") == 0
    scorer.config["rules"] = [{"name": "deep", "expression": "(" * 300 + "true" + ")" * 300}]
    scorer.write_config()
    wait_until(
        lambda: scorer.metric("fraud_rules_reloads_total", result="error") >= 1, 30, "rejected"
    )
    produce(bootstrap, TOPICS["input"], stream(small_stream.iloc[300:400]))
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= 420, 60, "still scoring")
    assert scorer.proc is not None and scorer.proc.poll() is None
    assert scorer.stop() == 0


def test_a_declared_feature_set_is_served_exactly_as_training_computed_it(
    cluster: MockCluster, tmp_path: Path, small_stream: pd.DataFrame
) -> None:
    """A model trained with `definitions`, a real scorer configured with the same definitions
    (as the operator renders spec.features): every decision's features are what training's
    replay of the same rows computed, rules use the declared names, and the model's feature-set
    version is reported."""
    from fraud_scorer.feature_defs import parse_feature_set
    from fraud_training.data import scorer_features
    from fraud_training.synth import SynthConfig, generate
    from fraud_training.train import train_and_export

    declared = {
        "historyHours": 72,
        "features": [
            {"name": "amount", "kind": "field", "field": "amount"},
            {"name": "hour_of_day", "kind": "hour_of_day"},
            {"name": "tx_count_24h", "kind": "window", "agg": "count", "window": "24h"},
            {"name": "amount_max_7d", "kind": "window", "agg": "max", "of": "amount",
             "window": "7d"},
            {"name": "amount_zscore", "kind": "window", "agg": "zscore", "of": "amount"},
            {"name": "devices_24h", "kind": "window", "agg": "distinct", "of": "device_id",
             "window": "24h"},
        ],
    }  # fmt: skip
    defs = parse_feature_set(declared)
    frame = generate(SynthConfig(users=2000, days=4.0, seed=21, fraud_users_share=0.05))
    report = train_and_export(frame, tmp_path / "model", version="declared-1", definitions=defs)
    head = small_stream.iloc[:1500]
    expected = scorer_features(head, definitions=defs)  # training's point-in-time replay
    rules = [{"name": "many-devices", "expression": "features.devices_24h >= 2.0"}]
    scorer = ScorerProcess(
        tmp_path,
        cluster.bootstrap_servers,
        report.model_dir,
        rules=rules,
        features={"definitions": declared},
    ).start()
    produce(cluster.bootstrap_servers, TOPICS["input"], stream(head))
    wait_until(
        lambda: topic_size(cluster.bootstrap_servers, TOPICS["decisions"]) >= 1500, 60, "all"
    )
    decided = decisions_by_id(cluster.bootstrap_servers)
    ids = head["transaction_id"].tolist()
    for i, tid in enumerate(ids):
        (d,) = decided[tid]
        got = [d["features"][name] for name in defs.names]  # type: ignore[index]
        assert got == pytest.approx(expected.x[i].tolist(), rel=1e-6, abs=1e-6), tid
        hit = "many-devices" in d["reasons"]  # type: ignore[operator]
        assert hit == (expected.x[i][defs.names.index("devices_24h")] >= 2)
    assert scorer.metric("fraud_model_info", feature_set=defs.version) == 1
    assert scorer.stop() == 0
