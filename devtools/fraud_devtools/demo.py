"""``make demo``: the whole pipeline on one machine, with nothing but this package installed.

1. trains a small LightGBM model on synthetic labelled transactions and exports it to ONNX, on
   the demo's feature set (``demo_features.yaml``: v1 plus features per merchant and device);
2. starts an in-process Kafka-protocol broker (librdkafka's mock cluster);
3. starts the real entity stage (``python -m fraud_scorer.entity_stage``), which computes the
   merchant and device features, and the real scorer (``python -m fraud_scorer``), which joins
   them, as separate processes;
4. streams synthetic traffic with injected fraud (and some malformed messages) at a fixed rate
   while reading decisions and dead letters back, with live progress;
5. stops both with SIGTERM and prints a report, also written to build/demo-report.json; the
   labelled traffic it sent is kept as build/demo-history.parquet, so ``fraud-rules backtest``
   can replay it (docs/rules.md);
6. with ``--console``: the decisions also go to a PostgreSQL case store through the real
   case-store sink, a share of the alerts is labelled, and the analyst console serves them at a
   printed URL until Ctrl-C (:mod:`fraud_devtools.demo_console`, docs/console.md).

Compromised merchants are injected ten times as often as the generator's default, so that their
recall is measured on dozens of transactions rather than a handful.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import yaml
from confluent_kafka import Consumer, Producer
from fraud_scorer.feature_defs import parse_feature_set
from fraud_training.data import OPTIONAL, REQUIRED, to_payloads
from fraud_training.synth import SynthConfig, generate
from fraud_training.train import train_and_export
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from fraud_devtools.local import free_port, stop_process, wait_http_ok
from fraud_devtools.mock_cluster import MockCluster
from fraud_devtools.producer import send_paced

TOPICS = {
    "input": "transactions",
    "decisions": "scored-transactions",
    "alerts": "fraud-alerts",
    "dead_letter": "transactions-dlq",
}
STAGE_TOPICS = {"by_entity": "transactions-by-entity", "entity_features": "entity-features"}
FEATURES_FILE = Path(__file__).with_name("demo_features.yaml")
HISTORY_FILE = "demo-history.parquet"
DEMO_RULES = [
    {"name": "high-amount", "expression": "tx.amount > 1500.0", "action": "review"},
    {
        "name": "risky-merchant",
        "expression": "tx.merchant in ['XYZ_Merchant', 'UnknownShop']",
        "action": "review",
    },
    {
        "name": "location-jump",
        "expression": "features.location_changed && features.seconds_since_last < 3600.0"
        " && !features.device_seen_before",
        "action": "review",
    },
    {
        "name": "impossible-travel",
        "expression": "features.travel_speed_kmh > 1000.0",
        "action": "review",
    },
    {
        "name": "card-testing",
        "expression": "features.tx_count_1h >= 4 && tx.amount < 5.0 && features.card_not_present",
        "action": "block",
    },
    {
        # From the entity stage: a device other cardholders used today, new to this one.
        "name": "shared-terminal",
        "expression": "features.device_users_24h >= 1 && !features.device_seen_before",
        "action": "review",
    },
]
_MALFORMED = (
    b"this is not json",
    b'{"transaction_id": "bad-1", "user_id": "u"}',
    b'{"transaction_id":"bad-2","user_id":"u","amount":-5,"currency":"EUR",'
    b'"timestamp":"2026-11-01T00:00:00Z","merchant":"m","merchant_category":"c",'
    b'"channel":"pos","location":"DE","device_id":"d"}',
    b"\xff\xfe\x00garbage",
)


class _DecisionView(msgspec.Struct):
    transaction_id: str
    action: str
    reasons: list[str]
    latency_ms: float
    scored_at: float


@dataclass
class _Tally:
    produced: int = 0
    malformed_sent: int = 0
    decided: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    first_scored: float = float("inf")
    last_scored: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    scenario_hits: Counter[str] = field(default_factory=Counter)
    scenario_total: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _collector(
    bootstrap: str,
    labels: dict[str, tuple[int, str]],
    tally: _Tally,
    stop: threading.Event,
    keep: Path | None = None,
) -> None:
    """Tally the decisions (each transaction once) and dead letters; ``keep``: also write every
    counted decision as it came, one JSON per line."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "demo-report",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPICS["decisions"], TOPICS["dead_letter"]])
    decode = msgspec.json.Decoder(_DecisionView).decode
    seen: set[str] = set()
    kept = keep.open("wb") if keep is not None else None
    try:
        while not stop.is_set():
            for msg in consumer.consume(1000, 0.05):
                if msg.error():
                    continue
                if msg.topic() == TOPICS["dead_letter"]:
                    reason = dict(msg.headers() or []).get("dlq.reason") or b"?"
                    with tally.lock:
                        tally.dead[reason.decode() if isinstance(reason, bytes) else reason] += 1
                    continue
                d = decode(msg.value() or b"")
                if d.transaction_id in seen:  # at-least-once: count each transaction once
                    continue
                seen.add(d.transaction_id)
                if kept is not None:
                    kept.write((msg.value() or b"") + b"\n")
                label, scenario = labels.get(d.transaction_id, (0, "genuine"))
                alert = d.action != "allow"
                with tally.lock:
                    tally.decided += 1
                    tally.actions[d.action] += 1
                    tally.latencies.append(d.latency_ms)
                    tally.first_scored = min(tally.first_scored, d.scored_at)
                    tally.last_scored = max(tally.last_scored, d.scored_at)
                    if alert:
                        tally.reasons.update(d.reasons)
                    if label:
                        tally.scenario_total[scenario] += 1
                        if alert:
                            tally.scenario_hits[scenario] += 1
                    tally.tp += alert and label == 1
                    tally.fp += alert and label == 0
                    tally.fn += (not alert) and label == 1
    finally:
        consumer.close()
        if kept is not None:
            kept.close()


def _progress(tally: _Tally, target: int, rate: int) -> Panel:
    with tally.lock:
        lat = np.asarray(tally.latencies[-20000:]) if tally.latencies else np.zeros(1)
        t = Table.grid(padding=(0, 2))
        t.add_row("produced", f"{tally.produced:,} / {target:,}", "offered rate", f"{rate:,} tx/s")
        t.add_row("decided", f"{tally.decided:,}", "dead letters", f"{sum(tally.dead.values()):,}")
        t.add_row("review", f"{tally.actions['review']:,}", "block", f"{tally.actions['block']:,}")
        t.add_row(
            "latency p50",
            f"{np.percentile(lat, 50):.1f} ms",
            "latency p99",
            f"{np.percentile(lat, 99):.1f} ms",
        )
        t.add_row("true alerts", f"{tally.tp:,}", "false alerts", f"{tally.fp:,}")
    return Panel(t, title="fraud-detector demo: live", border_style="cyan")


def _report(
    tally: _Tally,
    args: argparse.Namespace,
    train_metrics: dict[str, float],
    scorer_exit: int,
    wall_s: float,
) -> dict[str, Any]:
    lat = np.asarray(tally.latencies) if tally.latencies else np.zeros(1)
    scored_span = max(tally.last_scored - tally.first_scored, 1e-9)
    alerts = tally.tp + tally.fp
    return {
        "transactions_produced": tally.produced,
        "malformed_produced": tally.malformed_sent,
        "decisions": tally.decided,
        "dead_letters": dict(tally.dead),
        "lost": (tally.produced - tally.decided)
        + (tally.malformed_sent - sum(tally.dead.values())),
        "offered_rate_tx_s": args.rate,
        "throughput_tx_s": round(tally.decided / scored_span, 1),
        "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 99)}
        | {"max": round(float(lat.max()), 2)},
        "actions": dict(tally.actions),
        "alerts_by_reason": dict(tally.reasons.most_common()),
        "precision": round(tally.tp / alerts, 4) if alerts else None,
        "recall": round(tally.tp / (tally.tp + tally.fn), 4) if tally.tp + tally.fn else None,
        "recall_by_scenario": {
            s: round(tally.scenario_hits[s] / n, 4) for s, n in sorted(tally.scenario_total.items())
        },
        "model_training_metrics": train_metrics,
        "scorer_exit_code": scorer_exit,
        "wall_seconds": round(wall_s, 1),
    }


def _print_report(console: Console, report: dict[str, Any], path: Path) -> None:
    t = Table(title="fraud-detector demo report", show_header=False)
    t.add_row(
        "transactions",
        f"{report['transactions_produced']:,} produced (+{report['malformed_produced']} "
        "malformed), "
        f"{report['decisions']:,} decided, {report['lost']} lost",
    )
    t.add_row("dead letters", ", ".join(f"{k}: {v}" for k, v in report["dead_letters"].items()))
    t.add_row(
        "throughput",
        f"{report['throughput_tx_s']:,} tx/s at {report['offered_rate_tx_s']:,} tx/s offered",
    )
    t.add_row("latency", ", ".join(f"{k} {v} ms" for k, v in report["latency_ms"].items()))
    t.add_row("actions", ", ".join(f"{k}: {v:,}" for k, v in report["actions"].items()))
    t.add_row(
        "alerts by reason", ", ".join(f"{k}: {v:,}" for k, v in report["alerts_by_reason"].items())
    )
    t.add_row("precision / recall", f"{report['precision']} / {report['recall']}")
    t.add_row(
        "recall by scenario",
        ", ".join(f"{k}: {v}" for k, v in report["recall_by_scenario"].items()),
    )
    stage = report.get("entity_stage") or {}
    if stage:
        t.add_row(
            "entity stage",
            f"{stage['folded']:,} events folded, {stage['published']:,} rows published, "
            f"mean delay to the table {stage['mean_publish_delay_ms']} ms",
        )
    t.add_row("scorer exit code", str(report["scorer_exit_code"]))
    console.print(t)
    console.print(f"report written to [bold]{path}[/bold]")


def run(args: argparse.Namespace) -> dict[str, Any]:
    console = Console()
    build = Path(args.build_dir)
    build.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    features = yaml.safe_load(FEATURES_FILE.read_text())
    with console.status("training a model on synthetic transactions..."):
        history = generate(SynthConfig(users=args.train_users, days=7.0, seed=7, **_injected(args)))
        trained = train_and_export(
            history, build / "demo-model", version="demo-1", definitions=parse_feature_set(features)
        )
    console.print(
        f"[green]model trained[/green] on {len(history):,} transactions: "
        f"AUC {trained.metrics['roc_auc']:.3f}, AP {trained.metrics['average_precision']:.3f}"
        f" -> {trained.model_dir}"
    )

    traffic = generate(
        SynthConfig(
            users=args.users,
            days=2.0,
            seed=11,
            start=SynthConfig().start + timedelta(days=7),
            **_injected(args),
        )
    )
    traffic = traffic.iloc[: args.transactions]
    payloads = to_payloads(traffic)
    # What was sent, with its labels: the history a backtest of the demo's rules replays.
    traffic[[*REQUIRED, *OPTIONAL, "label"]].to_parquet(build / HISTORY_FILE, index=False)
    labels = dict(
        zip(
            traffic["transaction_id"],
            zip(traffic["label"].tolist(), traffic["scenario"].astype(str), strict=True),
            strict=True,
        )
    )

    with MockCluster() as cluster, ExitStack() as later:
        for name, parts in (("input", 8), ("decisions", 16), ("alerts", 4), ("dead_letter", 4)):
            cluster.create_topic(TOPICS[name], parts)
        for topic in STAGE_TOPICS.values():
            cluster.create_topic(topic, 8)
        console.print(f"[green]mock Kafka cluster[/green] on {cluster.bootstrap_servers}")
        port = free_port()
        config = {
            "detector": "demo",
            "kafka": {
                "bootstrap_servers": cluster.bootstrap_servers,
                "group_id": "fraud-scorer-demo",
            },
            "topics": {**TOPICS, "entity_features": STAGE_TOPICS["entity_features"]},
            "model": {"path": str(trained.model_dir)},
            "features": {"definitions": features},
            "rules": DEMO_RULES,
            "decision": {
                "review_at": round(trained.review_at, 6),
                "block_at": round(trained.block_at, 6),
            },
            "metrics": {"host": "127.0.0.1", "port": port},
        }
        config_path = build / "demo-scorer.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        log_path = build / "demo-scorer.log"
        store = None
        if args.console:
            from fraud_devtools.demo_console import LABELS_TOPIC, case_store

            cluster.create_topic(LABELS_TOPIC, 4)  # before the sink subscribes to it
            store = later.enter_context(
                case_store(build, cluster.bootstrap_servers, TOPICS, console)
            )
        stage_port = free_port()
        stage_config = {
            "detector": "demo",
            "kafka": {
                "bootstrap_servers": cluster.bootstrap_servers,
                "group_id": "fraud-entity-stage-demo",
            },
            "topics": {"input": TOPICS["input"], **STAGE_TOPICS},
            "features": features,
            "metrics": {"host": "127.0.0.1", "port": stage_port},
        }
        stage_path = build / "demo-entity-stage.yaml"
        stage_path.write_text(yaml.safe_dump(stage_config, sort_keys=False))
        with log_path.open("wb") as log_file, (build / "demo-entity-stage.log").open("wb") as sl:
            stage = subprocess.Popen(
                [sys.executable, "-m", "fraud_scorer.entity_stage", "--config", str(stage_path)],
                stdout=sl,
                stderr=subprocess.STDOUT,
            )
            scorer = subprocess.Popen(
                [sys.executable, "-m", "fraud_scorer", "--config", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ},
            )
            try:
                wait_http_ok(f"http://127.0.0.1:{stage_port}/readyz", stage)
                console.print(
                    f"[green]entity stage running[/green] (pid {stage.pid}, merchant and device "
                    f"features, metrics http://127.0.0.1:{stage_port}/metrics)"
                )
                wait_http_ok(f"http://127.0.0.1:{port}/readyz", scorer)
                console.print(
                    f"[green]scorer running[/green] (pid {scorer.pid}, metrics "
                    f"http://127.0.0.1:{port}/metrics, log {log_path})"
                )
                tally = _Tally()
                stop = threading.Event()
                collector = threading.Thread(
                    target=_collector,
                    args=(cluster.bootstrap_servers, labels, tally, stop, args.keep_decisions),
                    daemon=True,
                )
                collector.start()
                _stream(cluster.bootstrap_servers, traffic, payloads, args, tally, console)
                stop.set()
                collector.join(10)
                stage_figures = _stage_figures(stage_port)
            finally:
                exit_code = stop_process(scorer)
                stage_exit = stop_process(stage)
        report = _report(tally, args, trained.metrics, exit_code, time.monotonic() - started)
        report["entity_stage"] = {**stage_figures, "exit_code": stage_exit}
        report["feature_set"] = parse_feature_set(features).version
        if store is not None:
            from fraud_devtools.demo_console import label_alerts, serve_console, wait_for_cases

            cases = wait_for_cases(store, tally.decided)
            labelled = label_alerts(store, cluster.bootstrap_servers, labels, 0.6, seed=11)
            report["case_store"] = {"cases": cases, "labelled_alerts": labelled}
        path = build / "demo-report.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        _print_report(console, report, path)
        if store is not None:
            report["console_exit_code"] = serve_console(
                store, build, cluster.bootstrap_servers, console, args.console_seconds,
                args.console_port,
            )  # fmt: skip
    return report


def _injected(args: argparse.Namespace) -> dict[str, Any]:
    return {"compromised_merchants_per_day_per_10k_users": args.compromised_merchants}


def _stage_figures(port: int) -> dict[str, Any]:
    """What the stage did, from its own metrics: events folded, rows published, and the
    delay from a transaction's arrival to its table row (the mean)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()

    def total(name: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name)] in "{ "
        )

    count = total("fraud_entity_stage_publish_delay_seconds_count")
    delay = total("fraud_entity_stage_publish_delay_seconds_sum") / count if count else None
    return {
        "folded": int(total("fraud_entity_stage_folded_total")),
        "published": int(total("fraud_entity_stage_published_total")),
        "mean_publish_delay_ms": round(delay * 1000, 1) if delay is not None else None,
    }


def _stream(
    bootstrap: str,
    traffic: pd.DataFrame,
    payloads: list[bytes],
    args: argparse.Namespace,
    tally: _Tally,
    console: Console,
) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    )
    every = max(int(1 / args.malformed_share), 1) if args.malformed_share > 0 else 0
    users = traffic["user_id"].tolist()

    def items() -> Iterator[tuple[bytes | None, bytes]]:
        """The traffic, with a malformed message after every ``every`` valid ones."""
        for i, (user, raw) in enumerate(zip(users, payloads, strict=True)):
            yield user.encode(), raw
            tally.produced = i + 1
            if every and i % every == every - 1:
                yield b"malformed", _MALFORMED[(i // every) % len(_MALFORMED)]
                tally.malformed_sent += 1

    with Live(
        _progress(tally, len(payloads), args.rate), console=console, refresh_per_second=4
    ) as live:
        send_paced(
            producer,
            TOPICS["input"],
            items(),
            args.rate,
            every=500,
            on_progress=lambda _: live.update(_progress(tally, len(payloads), args.rate)),
        )
        producer.flush(30)
        # Wait (bounded) until every message, valid or not, has come back out.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live.update(_progress(tally, len(payloads), args.rate))
            with tally.lock:
                out = tally.decided + sum(tally.dead.values())
            if out >= tally.produced + tally.malformed_sent:
                break
            time.sleep(0.25)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraud-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--transactions", type=int, default=100_000, help="transactions to produce and decide"
    )
    parser.add_argument("--rate", type=int, default=5_000, help="offered load, tx/s")
    parser.add_argument(
        "--users", type=int, default=25_000, help="cardholders in the traffic the scorer decides"
    )
    parser.add_argument(
        "--train-users",
        type=int,
        default=10_000,
        help="cardholders in the history the demo's model is trained on (others than above)",
    )
    parser.add_argument(
        "--malformed-share",
        type=float,
        default=0.002,
        help="share of messages made malformed, to show the dead-letter topic",
    )
    parser.add_argument(
        "--compromised-merchants",
        type=float,
        default=6.0,
        help="compromised merchants per day per 10,000 users (the generator's default is 0.6)",
    )
    parser.add_argument(
        "--build-dir", default="build", help="where the model, data and report are written"
    )
    parser.add_argument(
        "--keep-decisions",
        type=Path,
        help="also write every decision to this file, one JSON per line",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="also keep the decisions in a PostgreSQL case store (the machine's binaries) and "
        "serve the analyst console on them at a printed URL, until Ctrl-C",
    )
    parser.add_argument("--console-seconds", type=float, help="stop the console after this long")
    parser.add_argument("--console-port", type=int, help="the console's port (default: a free one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    # Ctrl-C and SIGTERM stop the demo cleanly (children, PostgreSQL, the console) even when it
    # was started with SIGINT ignored, as background jobs of a non-interactive shell are.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    report = run(args)
    ok = (
        report["lost"] == 0
        and report["scorer_exit_code"] == 0
        and report["entity_stage"]["exit_code"] == 0
        and report.get("console_exit_code", 0) == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
