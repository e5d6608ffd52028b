"""``make bench``: throughput, latency and memory of the scorer on one core.

Same broker (librdkafka's mock cluster, in this process, on the other core), same messages:

1. raw passthrough: consume -> produce the same bytes, no scoring (the ceiling);
2. the scorer (``python -m fraud_scorer``) with 10 CEL rules and the default LightGBM model
   (200 trees of depth 3), on the default feature set: v1 plus three merchant and device
   aggregates (``fraud_devtools/demo_features.yaml``), joined from the entity stage's table,
   which a stage process fills from the same messages first (``--features v1``: v1 alone);
3. a naive reference scorer built the way simple tutorials do it: per message ``json.loads``,
   a one-row pandas DataFrame and scikit-learn ``predict_proba`` (measured on a prefix, since
   it is three orders of magnitude slower).

Three interleaved rounds of the three; each throughput is the median of its runs, and the
scorer's is read from its decisions' Kafka timestamps (nothing polls it while it works). Then
p50/p99 event-to-decision latency of the scorer at a fixed offered load, and peak RSS of the
scoring pipeline with 1M distinct users in feature state. Writes build/bench.json.
Every measured process is pinned to CPU 0; the broker and the load generator run on CPU 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import yaml
from confluent_kafka import Consumer, Producer
from fraud_devtools.mock_cluster import MockCluster
from fraud_devtools.producer import send_paced
from fraud_training.data import scorer_features, to_payloads
from fraud_training.synth import SynthConfig, generate
from fraud_training.train import train_and_export

SCORER_CPU, LOAD_CPU = 0, 1
BY_ENTITY, TABLE = "bench-by-entity", "bench-table"


def demo_features() -> dict[str, Any]:
    """v1 plus three aggregates per merchant and device: the bench's default set."""
    import fraud_devtools

    path = Path(fraud_devtools.__file__).with_name("demo_features.yaml")
    features: dict[str, Any] = yaml.safe_load(path.read_text())
    return features


RULES = [
    {"name": "high-amount", "expression": "tx.amount > 1500.0"},
    {"name": "risky-merchant", "expression": "tx.merchant in ['XYZ_Merchant', 'UnknownShop']"},
    {
        "name": "location-jump",
        "expression": "features.location_changed && features.seconds_since_last < 3600.0",
    },
    {"name": "impossible-travel", "expression": "features.travel_speed_kmh > 1000.0"},
    {
        "name": "card-testing",
        "expression": "features.tx_count_1h >= 4 && tx.amount < 5.0",
        "action": "block",
    },
    {
        "name": "new-device-big",
        "expression": "!features.device_seen_before && features.amount_zscore > 3.0",
    },
    {
        "name": "night-cnp",
        "expression": "features.hour_of_day < 5 && features.card_not_present && tx.amount > 300.0",
    },
    {"name": "velocity-24h", "expression": "features.tx_count_24h > 20"},
    {
        "name": "spend-spike",
        "expression": "features.amount_sum_24h > 5000.0 || features.amount_to_mean > 20.0",
    },
    {
        "name": "foreign-far",
        "expression": "tx.location in ['NG', 'RU', 'VN'] && features.location_changed",
    },
]


def default_model(
    history: pd.DataFrame, build: Path, name: str, features: dict[str, Any] | None = None
) -> tuple[Any, dict[str, float]]:
    """The default LightGBM model trained on ``history`` (with ``features``, else v1) and
    exported to ``build/<name>-model``, with the decision thresholds it was fitted for (the
    scorer's ``decision`` settings)."""
    from fraud_scorer.feature_defs import parse_feature_set

    definitions = parse_feature_set(features) if features is not None else None
    trained = train_and_export(
        history, build / f"{name}-model", version=f"{name}-1", definitions=definitions
    )
    return trained, {
        "review_at": round(trained.review_at, 6),
        "block_at": round(trained.block_at, 6),
    }


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def _fill(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "queue.buffering.max.messages": 2_000_000,
            "batch.num.messages": 10000,
        }
    )
    for i, (k, v) in enumerate(items):
        p.produce(topic, v, k)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(60)


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
        }
    )


def _raw_passthrough(bootstrap: str, topic: str, n: int, run: int, out: Any) -> None:
    pin(SCORER_CPU)
    c = _consumer(bootstrap, f"bench-raw-{run}")
    p = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    )
    c.subscribe([topic])
    done, t0 = 0, None
    while done < n:
        msgs = c.consume(2000, 0.01)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                p.produce("bench-raw-out", m.value(), m.key())
                done += 1
        p.poll(0)
    p.flush(60)
    out.put({"tx": done, "seconds": time.perf_counter() - (t0 or 0)})
    c.close()


def _naive(
    bootstrap: str, topic: str, n: int, model_path: str, features: Any, run: int, out: Any
) -> None:
    """The tutorial way: json.loads, a one-row DataFrame, sklearn predict_proba, per message
    (the features from the scorer's engine, joined with the stage's table as the scorer does)."""
    pin(SCORER_CPU)
    import pickle

    import pandas as pd
    from fraud_scorer.contract import Transaction, TransactionDecoder

    with open(model_path, "rb") as fh:
        clf = pickle.load(fh)
    feature_set, table = _feature_set(features), _read_table(bootstrap) if features else {}
    engine = feature_set.make_engine(_lookup(table) if feature_set.staged else None)
    names = list(feature_set.names)
    decoder = TransactionDecoder(1 << 16)
    c = _consumer(bootstrap, f"bench-naive-{run}")
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    c.subscribe([topic])
    done, t0 = 0, None
    while done < n:
        for m in c.consume(100, 0.01):
            if m.error() is not None or done >= n:
                continue
            if t0 is None:
                t0 = time.perf_counter()
            raw = m.value() or b""
            doc = json.loads(raw)
            tx = decoder.decode(raw)
            assert isinstance(tx, Transaction)
            row = engine.compute(0, tx, tx.timestamp.timestamp())
            frame = pd.DataFrame([row], columns=names)
            score = float(clf.predict_proba(frame)[0, 1])
            hits = [r["name"] for r in RULES if doc["amount"] > 1500.0]
            decision = {
                "transaction_id": doc["transaction_id"],
                "score": score,
                "action": "review" if score > 0.9 or hits else "allow",
                "reasons": hits,
            }
            p.produce("bench-naive-out", json.dumps(decision).encode(), m.key())
            done += 1
        p.poll(0)
    p.flush(60)
    out.put({"tx": done, "seconds": time.perf_counter() - (t0 or 0)})
    c.close()


def _in_subprocess(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, q))
    proc.start()
    result: dict[str, Any] = q.get(timeout=1800)
    proc.join(60)
    return result


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def _code_env(code: Path | None) -> dict[str, str]:
    """The environment of a process that runs the scorer package under ``code`` (an earlier
    revision's tree) instead of the installed one."""
    if code is None:
        return dict(os.environ)
    paths = [str(code / d) for d in ("runtime", "scorer") if (code / d).is_dir()]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _start_scorer(
    build: Path,
    bootstrap: str,
    model_dir: Path,
    topic: str,
    group: str,
    decision: dict[str, float],
    decisions_topic: str = "bench-decisions",
    code: Path | None = None,
    features: dict[str, Any] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """A scorer process pinned to its CPU; ``code``: run the scorer package found under this
    folder (an earlier revision, see ``--baseline``) instead of the installed one."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cfg = {
        "detector": "bench",
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
        "topics": {
            "input": topic,
            "decisions": decisions_topic,
            "alerts": "bench-alerts",
            "dead_letter": "bench-dlq",
        },
        "model": {"path": str(model_dir)},
        "rules": RULES,
        "decision": decision,
        "metrics": {"host": "127.0.0.1", "port": port},
    }
    if features is not None:
        cfg["features"] = {"definitions": features}
        cfg["topics"]["entity_features"] = TABLE  # type: ignore[index]
    path = build / f"bench-{group}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = (build / f"bench-{group}.log").open("wb")
    env = _code_env(code) if code is not None else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraud_scorer", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=lambda: pin(SCORER_CPU),  # noqa: PLW1509
    )
    return _ready(proc, port, "bench scorer")


def _ready(proc: subprocess.Popen[bytes], port: int, what: str) -> tuple[Any, int]:
    """``proc`` once its /readyz answers 200 (a minute at most; killed otherwise)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not become ready")


def _scorer_throughput(
    build: Path,
    bootstrap: str,
    model_dir: Path,
    n: int,
    decision: dict[str, float],
    group: str = "bench-scorer",
    code: Path | None = None,
    features: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Decisions per second of a scorer process over the ``n`` messages of the input topic:
    from the Kafka timestamps of its first and last decisions (set by its producer), so the
    measurement costs the scorer nothing; its /metrics is polled only to know when it is done."""
    import psutil

    before = _ends(bootstrap, "bench-decisions")
    proc, port = _start_scorer(
        build, bootstrap, model_dir, "bench-in", group, decision, code=code, features=features
    )
    try:
        while _metric(port, "fraud_transactions_total") < n:
            time.sleep(0.25)
        rss = psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(60)
    first, last, count = _time_span(bootstrap, "bench-decisions", before)
    if count < n:  # the mock broker trims a partition's log past 5 MB: would undercount
        raise RuntimeError(f"{count:,} of {n:,} decisions left on the topic")
    return {"tx": count - 1, "seconds": last - first, "rss_mib": rss / 2**20}


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import TopicPartition

    c = _consumer(bootstrap, "bench-offsets")
    meta = c.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta}
    c.close()
    return ends


def _time_span(bootstrap: str, topic: str, since: dict[int, int]) -> tuple[float, float, int]:
    """The earliest and latest timestamps (s) and the count of ``topic``'s messages after
    the ``since`` offsets."""
    from confluent_kafka import TopicPartition

    ends = _ends(bootstrap, topic)
    c = _consumer(bootstrap, "bench-span")
    c.assign([TopicPartition(topic, p, since.get(p, 0)) for p in ends if ends[p] > since.get(p, 0)])
    todo = {p: end for p, end in ends.items() if end > since.get(p, 0)}
    first, last, count = float("inf"), 0.0, 0
    while todo:
        for m in c.consume(10_000, 0.5):
            if m.error() is not None:
                continue
            ms = m.timestamp()[1]
            first, last, count = min(first, ms), max(last, ms), count + 1
            if (m.offset() or 0) + 1 >= todo.get(m.partition() or 0, 0):
                todo.pop(m.partition() or 0, None)
    c.close()
    return first / 1000.0, last / 1000.0, count


def _against_baseline(
    build: Path,
    bootstrap: str,
    model_dir: Path,
    items: list[tuple[bytes, bytes]],
    decision: dict[str, float],
    revision: str,
    rounds: int = 5,
) -> dict[str, Any]:
    """The scorer of ``revision`` and this tree's, ``rounds`` times each: the process on the
    same input topic (a consumer group per run), and the pipeline alone on the same messages
    (bench/pipeline_worker.py); medians and their ratios. The order alternates (ABBA):
    every run adds its decisions to the in-process broker, which slows down as its logs grow,
    so a fixed order would favour whichever runs first."""
    code = build / "baseline"
    subprocess.run(["rm", "-rf", str(code)], check=True)
    code.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    runs: dict[str, list[float]] = {"this": [], "baseline": []}
    pipeline: dict[str, list[float]] = {"this": [], "baseline": []}
    payloads = build / "bench-pipeline-payloads"
    payloads.write_bytes(b"\n".join(v for _, v in items))
    pair: list[tuple[str, Path | None]] = [("baseline", code), ("this", None)]
    for i in range(rounds):
        for label, tree in pair if i % 2 == 0 else pair[::-1]:
            r = _scorer_throughput(
                build, bootstrap, model_dir, len(items), decision, f"bench-{label}-{i}", tree
            )
            runs[label].append(r["tx"] / r["seconds"])
            pipeline[label].append(_pipeline_rate(model_dir, payloads, tree))

    # Noise on a shared 2-core machine only ever slows a run down, so the best of each is
    # reported beside the median.
    def ratio(rates: dict[str, list[float]], of: Any) -> float:
        return float(of(rates["this"]) / of(rates["baseline"]))

    return {
        "revision": revision,
        "scorer_process_tx_per_s": runs,
        "pipeline_rows_per_s": pipeline,
        "this_to_baseline": ratio(runs, np.median),
        "this_to_baseline_best": ratio(runs, max),
        "pipeline_this_to_baseline": ratio(pipeline, np.median),
        "pipeline_this_to_baseline_best": ratio(pipeline, max),
    }


def _pipeline_rate(model_dir: Path, payloads: Path, code: Path | None) -> float:
    """Rows/s of BatchScorer.process alone (no Kafka): bench/pipeline_worker.py."""
    env = {**_code_env(code), "BENCH_RULES": json.dumps(RULES)}
    worker = Path(__file__).with_name("pipeline_worker.py")
    out = subprocess.run(
        [sys.executable, str(worker), str(model_dir), str(payloads)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rows_per_s"])


def _latency_at_load(
    build: Path,
    bootstrap: str,
    model_dir: Path,
    items: list[tuple[bytes, bytes]],
    rate: int,
    decision: dict[str, float],
    features: dict[str, Any] | None = None,
) -> dict[str, Any]:
    proc, _port = _start_scorer(
        build,
        bootstrap,
        model_dir,
        "bench-load",
        "bench-load",
        decision,
        "bench-load-decisions",
        features=features,
    )
    reader = _consumer(bootstrap, "bench-latency")
    reader.subscribe(["bench-load-decisions"])
    # wait for the reader's assignment before offering load
    deadline = time.monotonic() + 30
    while not reader.assignment() and time.monotonic() < deadline:
        reader.poll(0.1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    view = msgspec.json.Decoder(dict[str, Any]).decode
    e2e, scored = [], []

    def read(timeout: float = 0.0) -> None:
        """Decisions so far: the scorer's own latency, and ours from the event's time."""
        for m in reader.consume(1000, timeout):
            if m.error() is None:
                d = view(m.value() or b"")
                scored.append(d["latency_ms"])
                e2e.append(time.time() * 1000 - (d["scored_at"] * 1000 - d["latency_ms"]))

    try:
        send_paced(producer, "bench-load", items, rate, every=50, on_progress=lambda _: read())
        producer.flush(30)
        deadline = time.monotonic() + 30
        while len(scored) < len(items) and time.monotonic() < deadline:
            read(0.05)
    finally:
        reader.close()
        proc.terminate()
        proc.wait(60)
    warm = slice(len(scored) // 10, None)  # the first 10% include the consumer's start-up
    s, e = np.asarray(scored[warm]), np.asarray(e2e[warm])
    return {
        "offered_tx_s": rate,
        "decisions": len(scored),
        "scorer_p50_ms": float(np.percentile(s, 50)),
        "scorer_p99_ms": float(np.percentile(s, 99)),
        "downstream_p50_ms": float(np.percentile(e, 50)),
        "downstream_p99_ms": float(np.percentile(e, 99)),
    }


def _vm_hwm_mib() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from the
    parent that spawned us)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_with_users(model_dir: str, users: int, features: Any, out: Any) -> None:
    """Peak RSS of the real scoring pipeline holding ``users`` distinct users in state and,
    for a staged set, the stage's table with a row per device (one per user here) and per
    merchant, as a scorer holds it."""
    pin(SCORER_CPU)
    from fraud_runtime.process import tune_gc
    from fraud_runtime.settings import KafkaSettings
    from fraud_scorer.config import RuleSpec
    from fraud_scorer.entity_features import EntityValues, StagePlan
    from fraud_scorer.entity_table import EntityRows, EntityTable, TableMetrics
    from fraud_scorer.model import load_model
    from fraud_scorer.pipeline import BatchScorer
    from fraud_scorer.rules import compile_rules
    from prometheus_client import CollectorRegistry

    class Rec:
        __slots__ = ("_v",)

        def __init__(self, v: bytes) -> None:
            self._v = v

        def value(self) -> bytes:
            return self._v

        def key(self) -> None:
            return None

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return 0

        def topic(self) -> str:
            return "t"

        def timestamp(self) -> tuple[int, int]:
            return (1, int(time.time() * 1000))

        def headers(self) -> None:
            return None

    base = _vm_hwm_mib()
    tune_gc()  # as the scorer process does (fraud_runtime.process.KafkaProcess.run)
    feature_set = _feature_set(features)
    table = EntityTable(
        KafkaSettings(), "t", TableMetrics(CollectorRegistry(), "b", "stable"), feature_set.version
    )
    if feature_set.staged is not None:
        plan = StagePlan.of(feature_set.staged)
        for entity, slots in plan.slots.items():
            keys = (
                (f"dev-{i:08d}" for i in range(users))
                if entity == "device_id"
                else (f"m-{i}" for i in range(997))
            )
            rows = table.rows.setdefault(entity, EntityRows())
            for i, key in enumerate(keys):
                # As a scorer's table holds it: each row decoded from its own message.
                values = tuple(float(i % 7) for _ in slots)
                rows.put(key, EntityValues(plan.version, 1.79e9 + i, 1.79e9 + i, values).joined())
    scorer = BatchScorer(
        model=load_model(Path(model_dir), features=feature_set),
        ruleset=compile_rules([RuleSpec.model_validate(r) for r in RULES], features=feature_set),
        engine=feature_set.make_engine(table.rows_of if feature_set.staged else None),
        detector="b",
        track="stable",
        max_message_bytes=65536,
        feature_names=feature_set.names,
    )
    enc = msgspec.json.Encoder().encode
    countries = ["DE", "FR", "GB", "ES", "IT", "NL", "PL"]
    t0 = 1_793_500_000.0
    for start in range(0, users, 5000):
        batch = [
            Rec(
                enc(
                    {
                        "transaction_id": f"t{i}",
                        "user_id": f"user-{i:08d}",
                        "amount": 10.0 + i % 500,
                        "currency": "EUR",
                        "timestamp": t0 + i * 0.01,
                        "merchant": f"m-{i % 997}",
                        "merchant_category": ["grocery", "fuel", "travel"][i % 3],
                        "channel": "pos",
                        "location": countries[i % 7],
                        "device_id": f"dev-{i:08d}",
                    }
                ).replace(
                    b'"timestamp":' + str(t0 + i * 0.01).encode(),
                    b'"timestamp":"'
                    + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + i * 0.01)).encode()
                    + b'Z"',
                )
            )
            for i in range(start, min(start + 5000, users))
        ]
        scorer.process(batch)  # type: ignore[arg-type]
    out.put(
        {
            "users": scorer.engine.user_count(),
            "table_rows": len(table),
            "peak_rss_mib": _vm_hwm_mib(),
            "baseline_rss_mib": base,
        }
    )


def _feature_set(features: dict[str, Any] | None) -> Any:
    from fraud_scorer import feature_sets
    from fraud_scorer.feature_defs import parse_feature_set

    return (
        feature_sets.V1 if features is None else feature_sets.declared(parse_feature_set(features))
    )


def _lookup(table: dict[str, Any]) -> Any:
    """A scorer's join over rows keyed as the table's ("<entity>=<key>")."""
    from fraud_scorer.entity_features import SEP

    by_entity: dict[str, dict[str, Any]] = {}
    for name, row in table.items():  # one stage run of this set: every row is of it
        entity, _, key = name.partition(SEP)
        by_entity.setdefault(entity, {})[key] = row
    return lambda entity: by_entity.setdefault(entity, {})


def _read_table(bootstrap: str) -> dict[str, Any]:
    """The stage's table as a scorer reads it: the newest row per key."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition
    from fraud_scorer.entity_features import EntityValues

    c = _consumer(bootstrap, "bench-table-reader")
    ends = {p: c.get_watermark_offsets(TopicPartition(TABLE, p), timeout=10)[1] for p in range(16)}
    c.assign([TopicPartition(TABLE, p, OFFSET_BEGINNING) for p in range(16)])
    decode = msgspec.json.Decoder(EntityValues).decode
    rows: dict[str, Any] = {}
    todo = {p for p, end in ends.items() if end > 0}
    while todo:
        for m in c.consume(5000, 0.2):
            if m.error() is None:
                rows[(m.key() or b"").decode()] = decode(m.value() or b"").joined()
                if (m.offset() or 0) + 1 >= ends[m.partition() or 0]:
                    todo.discard(m.partition() or 0)
    c.close()
    return rows


def start_stage(
    build: Path,
    bootstrap: str,
    topic: str,
    group: str,
    features: dict[str, Any],
    by_entity: str,
    table: str,
) -> tuple[subprocess.Popen[bytes], int]:
    """An entity stage process pinned to the scorer's CPU, ready."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cfg = {
        "detector": "bench",
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
        "topics": {"input": topic, "by_entity": by_entity, "entity_features": table},
        "features": features,
        "metrics": {"host": "127.0.0.1", "port": port},
    }
    path = build / f"bench-{group}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = (build / f"bench-{group}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraud_scorer.entity_stage", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: pin(SCORER_CPU),  # noqa: PLW1509
    )
    return _ready(proc, port, f"the stage ({log.name})")


def _fill_table(build: Path, bootstrap: str, features: dict[str, Any], n: int) -> float:
    """Run the entity stage over the input topic until it folded every message for each of
    its entities: the table the scorer then joins. Returns the seconds it took."""
    from fraud_scorer.feature_defs import parse_feature_set

    entities = len(parse_feature_set(features).stage_entities())
    proc, port = start_stage(build, bootstrap, "bench-in", "bench-stage", features, BY_ENTITY,
                             TABLE)  # fmt: skip
    started = time.perf_counter()
    try:
        while _metric(port, "fraud_entity_stage_folded_total") < entities * n:
            time.sleep(0.2)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--naive-messages", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs (medians)")
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--users-in-state", type=int, default=1_000_000)
    parser.add_argument("--out", default="build/bench.json")
    parser.add_argument(
        "--features",
        choices=("default", "v1"),
        default="default",
        help="default: v1 plus three merchant and device aggregates (the entity stage's table)",
    )
    parser.add_argument(
        "--baseline",
        help="a git revision: its scorer is measured in the same run, alternating with this "
        "tree's, on the same messages (ratio scorer_to_baseline)",
    )
    args = parser.parse_args()
    if args.baseline and args.features != "v1":
        parser.error("--baseline compares scorers on --features v1 (an older tree has no stage)")
    features = demo_features() if args.features == "default" else None
    build = Path(args.out).parent
    build.mkdir(parents=True, exist_ok=True)
    pin(LOAD_CPU)

    print("training the default LightGBM model...", flush=True)
    history = generate(SynthConfig(users=10_000, days=7.0, seed=7))
    trained, decision = default_model(history, build, "bench", features)
    naive_model = build / "bench-naive.pkl"
    _train_naive(history, naive_model, features)

    traffic = generate(SynthConfig(users=max(args.messages // 5, 1000), days=2.0, seed=21))
    payloads = to_payloads(traffic)
    keys = [u.encode() for u in traffic["user_id"]]
    repeat = args.messages // max(len(payloads), 1) + 1
    items = (list(zip(keys, payloads, strict=True)) * repeat)[: args.messages]
    results: dict[str, Any] = {}
    with MockCluster() as cluster:
        bs = cluster.bootstrap_servers
        for topic, parts in (
            ("bench-in", 16),
            ("bench-load", 16),
            ("bench-raw-out", 32),
            ("bench-naive-out", 4),
            ("bench-decisions", 32),
            ("bench-load-decisions", 16),
            ("bench-alerts", 16),
            ("bench-dlq", 4),
            # librdkafka's mock broker keeps at most 5 MB per partition: room for the stage's
            # 400,000 routed records and table rows.
            (BY_ENTITY, 16),
            (TABLE, 16),
        ):
            cluster.create_topic(topic, parts)
        print(f"filling the input topic with {len(items):,} messages...", flush=True)
        _fill(bs, "bench-in", items)
        if features is not None:
            print("    the entity stage fills its table from them...", flush=True)
            results["stage_fill_seconds"] = _fill_table(build, bs, features, len(items))

        # Latency first, on a broker holding only the input: it slows a little as its logs
        # grow, and each round below adds about 400,000 messages (passthrough and decisions).
        print(f"latency at {args.rate:,} tx/s offered...", flush=True)
        load_items = items[: int(args.rate * args.latency_seconds)]
        results["latency"] = _latency_at_load(
            build, bs, trained.model_dir, load_items, args.rate, decision, features
        )
        # Three rounds of raw, scorer and naive, interleaved; each figure is the median of
        # its three (one run moves by 10-15% on this machine; the broker slows a little as its
        # logs grow, which interleaving spreads evenly).
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "scorer": [], "naive": []}
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}: raw passthrough, scorer, naive...", flush=True)
            runs["raw"].append(_in_subprocess(_raw_passthrough, bs, "bench-in", len(items), i))
            runs["scorer"].append(
                _scorer_throughput(
                    build, bs, trained.model_dir, len(items), decision, f"bench-scorer-{i}",
                    features=features,
                )
            )  # fmt: skip
            runs["naive"].append(
                _in_subprocess(
                    _naive, bs, "bench-in", args.naive_messages, str(naive_model), features, i
                )
            )
        for k, rs in runs.items():
            rates = [r["tx"] / r["seconds"] for r in rs]
            middle = sorted(range(len(rates)), key=rates.__getitem__)[len(rates) // 2]
            results[k] = {**rs[middle], "runs_tx_per_s": rates}
        if args.baseline:
            print(f"    this tree against {args.baseline}, alternating...", flush=True)
            results["baseline"] = _against_baseline(
                build, bs, trained.model_dir, items, decision, args.baseline
            )
    print(f"peak RSS with {args.users_in_state:,} users in state...", flush=True)
    results["memory"] = _in_subprocess(
        _rss_with_users, str(trained.model_dir), args.users_in_state, features
    )

    for k in ("raw", "scorer", "naive"):
        results[k]["tx_per_s"] = results[k]["tx"] / results[k]["seconds"]
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "messages": len(items),
        "rules": len(RULES),
        "feature_set": _feature_set(features).version,
        "model": {"trees": 200, "max_depth": 3, "framework": "lightgbm -> onnx"},
        **results,
        "ratios": {
            "scorer_to_raw": results["scorer"]["tx_per_s"] / results["raw"]["tx_per_s"],
            "scorer_to_naive": results["scorer"]["tx_per_s"] / results["naive"]["tx_per_s"],
            **(
                {
                    "scorer_to_baseline": results["baseline"]["this_to_baseline"],
                    "pipeline_to_baseline": results["baseline"]["pipeline_this_to_baseline"],
                }
                if "baseline" in results
                else {}
            ),
        },
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    _print(report)
    return 0


def _train_naive(history: pd.DataFrame, path: Path, features: dict[str, Any] | None) -> None:
    import pickle

    from fraud_scorer.feature_defs import parse_feature_set
    from sklearn.ensemble import GradientBoostingClassifier

    definitions = parse_feature_set(features) if features is not None else None
    data = scorer_features(history, definitions=definitions)
    clf = GradientBoostingClassifier(n_estimators=100, max_depth=5, random_state=7)
    idx = np.random.default_rng(7).choice(len(data.y), size=min(40_000, len(data.y)), replace=False)
    clf.fit(pd.DataFrame(data.x[idx], columns=list(data.feature_names)), data.y[idx])
    path.write_bytes(pickle.dumps(clf))


def _print(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"fraud-detector bench ({r['messages']:,} messages, feature set "
        f"{r['feature_set']}, one core per run)"
    )
    t.add_column("measure")
    t.add_column("result", justify="right")
    t.add_column("goal", justify="right")
    t.add_row("raw passthrough", f"{r['raw']['tx_per_s']:,.0f} tx/s", "ceiling")
    t.add_row(
        "scorer (10 rules, 200 trees)",
        f"{r['scorer']['tx_per_s']:,.0f} tx/s",
        ">= 25,000 (aim 75,000)",
    )
    t.add_row("naive reference", f"{r['naive']['tx_per_s']:,.0f} tx/s", "")
    t.add_row("scorer / raw", f"{r['ratios']['scorer_to_raw']:.2f}", ">= 0.2")
    t.add_row("scorer / naive", f"{r['ratios']['scorer_to_naive']:,.0f}x", ">= 50x")
    lat = r["latency"]
    t.add_row(
        f"latency p50 / p99 @ {lat['offered_tx_s']:,} tx/s (scorer)",
        f"{lat['scorer_p50_ms']:.1f} / {lat['scorer_p99_ms']:.1f} ms",
        "p99 <= 50 ms",
    )
    t.add_row(
        "latency p50 / p99 (downstream consumer)",
        f"{lat['downstream_p50_ms']:.1f} / {lat['downstream_p99_ms']:.1f} ms",
        "",
    )
    mem = r["memory"]
    t.add_row(
        f"peak RSS, {mem['users']:,} users in state",
        f"{mem['peak_rss_mib']:,.0f} MiB",
        "<= 1024 MiB",
    )
    t.add_row("scorer RSS after throughput run", f"{r['scorer']['rss_mib']:,.0f} MiB", "")
    if "baseline" in r:
        b = r["baseline"]
        t.add_row(
            f"scorer process / {b['revision']} (median, best)",
            f"{b['this_to_baseline']:.2f}, {b['this_to_baseline_best']:.2f}",
            "within noise of 1",
        )
        t.add_row(
            f"pipeline alone / {b['revision']} (median, best)",
            f"{b['pipeline_this_to_baseline']:.2f}, {b['pipeline_this_to_baseline_best']:.2f}",
            "within noise of 1",
        )
    Console().print(t)


if __name__ == "__main__":
    sys.exit(main())
