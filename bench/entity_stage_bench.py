"""The entity stage's throughput and freshness (part of ``make bench``).

One stage process (``python -m fraud_scorer.entity_stage``) pinned to CPU 0; the broker
(librdkafka's mock cluster), the load generator and the table reader on CPU 1. The feature set is
three aggregates per merchant and device (and a merchant's delayed fraud rate):

1. **throughput**: the input topic is filled first, then the stage drains it: transactions
   routed and folded per second, against the raw passthrough (consume -> produce the same bytes,
   no work) measured in the same run (``stage / raw``);
2. **freshness at a fixed load** (default 5,000 tx/s): the delay from a transaction's arrival on
   the input topic (its Kafka timestamp) to the table row it changed, as a scorer's table reader
   sees it (p50, p99, max).

Writes build/bench-entity-stage.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from fraud_devtools.mock_cluster import MockCluster
from fraud_devtools.producer import send_paced
from fraud_training.data import to_payloads
from fraud_training.synth import SynthConfig, generate
from run_bench import LOAD_CPU, _fill, _in_subprocess, _raw_passthrough, pin, start_stage

FEATURES: dict[str, Any] = {
    "history_hours": 168,
    "features": [
        {"name": "amount", "kind": "field", "field": "amount"},
        {"name": "merchant_tx_1h", "kind": "window", "agg": "count", "window": "1h",
         "entity": "merchant"},
        {"name": "merchant_users_24h", "kind": "window", "agg": "distinct", "of": "user_id",
         "window": "24h", "entity": "merchant"},
        {"name": "device_users_24h", "kind": "window", "agg": "distinct", "of": "user_id",
         "window": "24h", "entity": "device_id"},
        {"name": "merchant_risk_7d", "kind": "label", "agg": "fraud_rate", "window": "7d",
         "delay": "1d", "entity": "merchant"},
    ],
}  # fmt: skip


def _start_stage(build: Path, bootstrap: str, topic: str, group: str) -> tuple[Any, int]:
    return start_stage(
        build, bootstrap, topic, group, FEATURES, f"{group}-by-entity", f"{group}-table"
    )


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in "{ "
    )


def _throughput(build: Path, bootstrap: str, items: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    proc, port = _start_stage(build, bootstrap, "es-fill", "es-throughput")
    entities = 2 * len(items)  # each transaction: its merchant and its device
    try:
        t0 = None
        first = 0.0
        while True:
            done = _metric(port, "fraud_entity_stage_folded_total")
            now = time.perf_counter()
            if done > 0 and t0 is None:
                t0, first = now, done
            if done >= entities:
                break
            time.sleep(0.05)
        return {"tx": (entities - first) / 2, "seconds": now - (t0 or now)}
    finally:
        proc.terminate()
        proc.wait(60)


def _freshness(
    build: Path, bootstrap: str, items: list[tuple[bytes, bytes]], rate: int
) -> dict[str, Any]:
    proc, port = _start_stage(build, bootstrap, "es-load", "es-load")
    table = "es-load-table"
    delays: list[float] = []
    stop = threading.Event()

    def read() -> None:
        pin(LOAD_CPU)
        # As a scorer's table reader (fraud_scorer.entity_table): fetches wait 10 ms at most.
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "es-reader",
                      "fetch.wait.max.ms": 10, "enable.auto.commit": False})  # fmt: skip
        c.assign([TopicPartition(table, p, OFFSET_BEGINNING) for p in range(8)])
        while not stop.is_set():
            for m in c.consume(1000, 0.05):
                if m.error() is None:
                    source = dict(m.headers() or []).get("fe.source_ms")
                    if source:
                        delays.append(time.time() - float(source) / 1000.0)
        c.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    try:
        send_paced(producer, "es-load", items, rate, every=50)
        producer.flush(30)
        deadline = time.monotonic() + 30
        while _metric(port, "fraud_entity_stage_folded_total") < 2 * len(items):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        reader.join(10)
        proc.terminate()
        proc.wait(60)
    warm = np.asarray(delays[len(delays) // 10 :]) * 1000.0  # skip the start-up
    return {
        "offered_tx_s": rate,
        "table_rows_read": len(delays),
        "freshness_p50_ms": float(np.percentile(warm, 50)),
        "freshness_p99_ms": float(np.percentile(warm, 99)),
        "freshness_max_ms": float(warm.max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", default="build/bench-entity-stage.json")
    args = parser.parse_args()
    build = Path(args.out).parent
    build.mkdir(parents=True, exist_ok=True)
    pin(LOAD_CPU)
    frame = generate(SynthConfig(users=50_000, days=3.0, seed=3)).iloc[: args.messages]
    items = list(zip((u.encode() for u in frame["user_id"]), to_payloads(frame), strict=True))
    with MockCluster() as cluster:
        bootstrap = cluster.bootstrap_servers
        for topic in ("es-fill", "es-load"):
            cluster.create_topic(topic, 8)
        for group in ("es-throughput", "es-load"):
            cluster.create_topic(f"{group}-by-entity", 8)
            cluster.create_topic(f"{group}-table", 8)
        cluster.create_topic("bench-raw-out", 8)
        _fill(bootstrap, "es-fill", items)
        passthrough = _in_subprocess(_raw_passthrough, bootstrap, "es-fill", len(items))
        raw = passthrough["tx"] / passthrough["seconds"]
        stage = _throughput(build, bootstrap, items)
        load = items[: int(args.rate * args.seconds)]
        fresh = _freshness(build, bootstrap, load, args.rate)
    result = {
        "transactions": len(items),
        "raw_passthrough_tx_s": raw,
        "stage_tx_s": stage["tx"] / stage["seconds"],
        "stage_over_raw": stage["tx"] / stage["seconds"] / raw,
        "freshness": fresh,
        "features": FEATURES,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "features"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
