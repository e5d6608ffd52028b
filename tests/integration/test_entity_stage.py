"""The entity stage as it runs: real stage and scorer processes on librdkafka's mock cluster,
compared with training's point-in-time replay of the same rows (docs/features.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest
from fraud_devtools.local import wait_until
from fraud_devtools.mock_cluster import MockCluster
from fraud_scorer.contract import Transaction
from fraud_scorer.entity_features import EntityAggregator, EntityValues, StagePlan, table_key
from fraud_scorer.feature_defs import parse_feature_set

from tests.integration.harness import (
    TOPICS,
    ScorerProcess,
    produce,
    read_topic,
    stream,
    topic_size,
)

LABELS, BY_ENTITY, TABLE = "labels", "tx-by-entity", "entity-features"
DECLARED: dict[str, Any] = {
    "historyHours": 72,
    "features": [
        {"name": "amount", "kind": "field", "field": "amount"},
        {"name": "tx_count_24h", "kind": "window", "agg": "count", "window": "24h"},
        {"name": "merchant_tx_1h", "kind": "window", "agg": "count", "window": "1h",
         "entity": "merchant"},
        {"name": "merchant_users_24h", "kind": "window", "agg": "distinct", "of": "user_id",
         "window": "24h", "entity": "merchant"},
        {"name": "merchant_mean_24h", "kind": "window", "agg": "mean", "of": "amount",
         "window": "24h", "entity": "merchant"},
        {"name": "merchant_since_last", "kind": "window", "agg": "time_since_last",
         "entity": "merchant"},
        {"name": "merchant_risk_24h", "kind": "label", "agg": "fraud_rate", "window": "24h",
         "delay": "2h", "entity": "merchant"},
        {"name": "device_users_24h", "kind": "window", "agg": "distinct", "of": "user_id",
         "window": "24h", "entity": "device_id"},
    ],
}  # fmt: skip
_LABEL_LAG_S = 3600.0


class StageProcess(ScorerProcess):
    """A real ``python -m fraud_scorer.entity_stage`` process."""

    module = "fraud_scorer.entity_stage"

    def __init__(self, workdir: Path, bootstrap: str, name: str) -> None:
        from fraud_devtools.local import free_port

        self.port = free_port()
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.config = {
            "detector": "it",
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": "it-entity-stage",
                "extra": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            },
            "topics": {"input": TOPICS["input"], "labels": LABELS, "by_entity": BY_ENTITY,
                       "entity_features": TABLE},
            "features": DECLARED,
            "metrics": {"host": "127.0.0.1", "port": self.port},
            "batch": {"poll_timeout_s": 0.05},
        }  # fmt: skip
        self.write_config()
        self.proc = None


def _label(row: pd.Series, tx: bytes, at: float) -> tuple[bytes, bytes]:
    body = {
        "transaction_id": row["transaction_id"],
        "is_fraud": bool(row["label"]),
        "by": "analyst-7",
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        "transaction": json.loads(tx),
    }
    return row["transaction_id"].encode(), json.dumps(body).encode()


def _probes(frame: pd.DataFrame, n: int) -> list[int]:
    """Rows from the end of the stream sharing no merchant and no device with each other, so
    what the stage folds from one cannot change another's values."""
    chosen: list[int] = []
    merchants: set[str] = set()
    devices: set[str] = set()
    for i in range(len(frame) - 1, len(frame) // 2, -1):
        m, d = frame["merchant"].iloc[i], frame["device_id"].iloc[i]
        if m not in merchants and d not in devices:
            chosen.append(i)
            merchants.add(m)
            devices.add(d)
        if len(chosen) == n:
            break
    return sorted(chosen)


def test_the_stage_serves_what_training_computes_and_rebuilds_after_a_restart(
    cluster: MockCluster, tmp_path: Path, small_stream: pd.DataFrame
) -> None:
    """Two stage processes route and aggregate 1,800 transactions and their verdicts; a scorer
    then scores probe transactions against the table they published, and every probe's
    features (per user, per merchant, per device, the merchant's delayed fraud rate) equal
    training's point-in-time replay of the same rows. A stage started again rebuilds its state
    by replay and publishes the values a stage that never stopped would have."""
    from fraud_training.data import scorer_features
    from fraud_training.synth import SynthConfig, generate
    from fraud_training.train import train_and_export

    bootstrap = cluster.bootstrap_servers
    for topic in (LABELS, BY_ENTITY, TABLE):
        cluster.create_topic(topic, 4)
    defs = parse_feature_set(DECLARED)
    frame = small_stream.iloc[:2000].reset_index(drop=True)
    probes = _probes(frame, 40)
    first_probe = probes[0]
    before = list(range(first_probe))  # phase 1: everything before the first probe
    rows = before + probes
    items = stream(frame)
    ts = frame["timestamp"].map(lambda t: t.timestamp()).to_numpy(float)
    cutoff = ts[first_probe]
    # A verdict for every phase-1 row, an hour late; those not known before the first probe are
    # never sent (training is told they arrive in 2100).
    known = [i for i in before if ts[i] + _LABEL_LAG_S < cutoff]
    verdicts = [_label(frame.iloc[i], items[i][1], ts[i] + _LABEL_LAG_S) for i in known]

    report = train_and_export(
        generate(SynthConfig(users=1500, days=4.0, seed=5, fraud_users_share=0.05)),
        tmp_path / "model",
        version="staged-1",
        definitions=defs,
    )
    stages = [StageProcess(tmp_path, bootstrap, f"stage-{k}").start() for k in (1, 2)]
    produce(bootstrap, TOPICS["input"], [items[i] for i in before])
    produce(bootstrap, LABELS, verdicts)
    routed = 2 * (len(before) + len(verdicts))  # to a merchant and a device each

    def folded() -> float:
        return sum(s.metric("fraud_entity_stage_folded_total") for s in stages)

    wait_until(lambda: folded() >= routed, 120, f"stage folded {routed}")
    assert folded() == routed
    assert sum(s.metric("fraud_entity_stage_skipped_total") for s in stages) == 0
    assert all(s.metric("fraud_entity_stage_published_total") > 0 for s in stages)
    for s in stages:
        assert s.stop() == 0

    scorer = ScorerProcess(
        tmp_path,
        bootstrap,
        report.model_dir,
        rules=[{"name": "busy-device", "expression": "features.device_users_24h >= 2.0"}],
        features={"definitions": DECLARED},
        topics={**TOPICS, "entity_features": TABLE},
    ).start()
    produce(bootstrap, TOPICS["input"], [items[i] for i in probes])
    wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= len(rows), 90, "decided")

    training = frame.iloc[rows].reset_index(drop=True).copy()
    known_set, never = set(known), 4102444800.0  # 2100-01-01
    at = [ts[i] + _LABEL_LAG_S if i in known_set else never for i in rows]
    training["labelled_at"] = pd.to_datetime(at, unit="s", utc=True)
    expected = scorer_features(training, definitions=defs)
    decided = {
        d["transaction_id"]: d
        for d in (json.loads(r.value) for r in read_topic(bootstrap, TOPICS["decisions"]))
    }
    staged_seen = 0
    for pos, i in enumerate(rows):
        if i not in probes:
            continue
        d = decided[frame["transaction_id"].iloc[i]]
        got = [d["features"][name] for name in defs.names]
        assert got == pytest.approx(expected.x[pos].tolist(), rel=1e-6, abs=1e-6), d
        staged_seen += got[defs.names.index("merchant_users_24h")] > 0
    assert staged_seen >= len(probes) // 2  # the probes' merchants had history
    assert scorer.metric("fraud_entity_table_rows") > 0
    assert scorer.stop() == 0

    # A stage started again owns every partition, rebuilds them by replay, folds the probes
    # and publishes what an uninterrupted stage holds: training's aggregator over all rows.
    again = StageProcess(tmp_path, bootstrap, "stage-again").start()
    reference = EntityAggregator(StagePlan.of(defs))
    decode = msgspec.json.Decoder(Transaction).decode
    timeline = sorted([(ts[i], 0, i) for i in rows] + [(ts[i] + _LABEL_LAG_S, 1, i) for i in known])
    for _, kind, i in timeline:
        tx = decode(items[i][1])
        if kind == 0:
            reference.add_transaction(tx, ts[i])
        else:
            reference.add_label(tx, ts[i], bool(frame["label"].iloc[i]), ts[i] + _LABEL_LAG_S)
    expected_table = {
        table_key(entity, key): reference.values(entity, key)
        for entity, keys in reference.keys.items()
        for key in keys
    }

    def table() -> dict[str, EntityValues]:
        rows: dict[str, EntityValues] = {}
        for r in read_topic(bootstrap, TABLE):  # in offset order per partition: newest last
            rows[r.key.decode()] = msgspec.json.decode(r.value, type=EntityValues)  # type: ignore[union-attr]
        return rows

    wait_until(lambda: table() == expected_table, 90, "the table an uninterrupted stage holds")
    # Replayed up to the committed offsets; anything after them is consumed again.
    assert 0 < again.metric("fraud_entity_stage_replayed_total") <= routed
    assert again.stop() == 0


def test_hostile_messages_are_skipped_and_cannot_blind_a_key(
    cluster: MockCluster, tmp_path: Path
) -> None:
    """A real stage process fed what it should refuse: a ~900 kB message, broken UTF-8, not
    JSON, a transaction and a verdict dated 9999, a verdict without its transaction, and a
    merchant name with CR/LF. Each is counted by reason and skipped, the process keeps going,
    and the merchant the far-future transaction aimed at still gets its true table row from
    the normal transactions that follow."""
    bootstrap = cluster.bootstrap_servers
    for topic in (LABELS, BY_ENTITY, TABLE):
        cluster.create_topic(topic, 4)
    stage = StageProcess(tmp_path, bootstrap, "stage-hostile").start()
    base = json.loads(
        '{"transaction_id":"x","user_id":"u1","amount":10.0,"currency":"EUR",'
        '"timestamp":"2026-11-20T10:00:00Z","merchant":"victim","merchant_category":"c",'
        '"channel":"pos","location":"DE","device_id":"d1"}'
    )

    def tx(i: int, **changes: Any) -> bytes:
        return json.dumps({**base, "transaction_id": f"h{i}", **changes}).encode()

    future = tx(0, timestamp="9999-12-31T23:59:59Z")
    hostile = [
        (b"u1", b'{"pad":"' + b"x" * 900_000 + b'"}'),
        (b"u1", b"\xff\xfe\x00 not utf-8"),
        (b"u1", b"not json"),
        (b"u1", future),
        (b"u2", tx(1, merchant="evil\r\nX-Injected: 1", user_id="u2", device_id="d2")),
    ]
    produce(bootstrap, TOPICS["input"], hostile)
    labels = [
        (b"l1", b"garbage"),
        (b"l2", json.dumps({"transaction_id": "h9", "is_fraud": True, "by": "a"}).encode()),
        (b"l3", json.dumps({"transaction_id": "h0", "is_fraud": True, "by": "a",
                            "at": "9999-01-01T00:00:00Z",
                            "transaction": json.loads(tx(0))}).encode()),
    ]  # fmt: skip
    produce(bootstrap, LABELS, labels)
    normal = [(b"u1", tx(10 + i, timestamp=f"2026-11-20T10:0{i}:00Z")) for i in range(5)]
    produce(bootstrap, TOPICS["input"], normal)

    def skipped(reason: str) -> float:
        return stage.metric("fraud_entity_stage_skipped_total", reason=reason)

    wait_until(lambda: skipped("label_in_future") >= 1 and skipped("transaction_in_future") >= 1,
               60, "hostile messages counted")  # fmt: skip
    assert skipped("transaction_oversize") == 1
    assert skipped("transaction_invalid_encoding") == 1
    assert skipped("transaction_invalid_json") == 1
    assert skipped("label_invalid") == 1 and skipped("label_without_transaction") == 1

    def victim() -> EntityValues | None:
        rows = {r.key: r.value for r in read_topic(bootstrap, TABLE)}
        raw = rows.get(table_key("merchant", "victim").encode())
        return None if raw is None else msgspec.json.decode(raw, type=EntityValues)

    def caught_up() -> bool:
        row = victim()
        return row is not None and row.last_tx == "h14"

    wait_until(caught_up, 60, "the victim merchant's row from the normal transactions")
    row = victim()
    assert row is not None
    names = [s.feature.name for s in StagePlan.of(parse_feature_set(DECLARED)).slots["merchant"]]
    values = dict(zip(names, row.values, strict=True))
    assert values["merchant_tx_1h"] == 5  # all five normal ones, none dropped as "too old"
    assert row.as_of == datetime(2026, 11, 20, 10, 4, tzinfo=UTC).timestamp()
    assert stage.proc is not None and stage.proc.poll() is None  # still running
    assert stage.stop() == 0
