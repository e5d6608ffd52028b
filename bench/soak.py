"""``make soak``: the scorer under the benchmark's offered load (5,000 tx/s) for 10 minutes.

Is memory steady (no leak) and p99 latency stable? The stream is 20,000 users over 50 days of
event time, so feature state fills within the first minutes (the 7-day horizon, 64 events per
user at most) and must then stay flat. Every 30 s: the scorer's RSS, users in state, consumer
lag, and p50/p99 of the scorer's event-to-decision latency over the interval. Writes
build/soak.json. Same set-up as ``bench/run_bench.py`` (scorer pinned to CPU 0, broker and load
generator on CPU 1).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from confluent_kafka import Producer
from fraud_devtools.mock_cluster import MockCluster
from fraud_devtools.producer import send_paced
from fraud_training.data import to_payloads
from fraud_training.synth import SynthConfig, generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import (  # type: ignore[import-not-found]
    LOAD_CPU,
    _metric,
    _start_scorer,
    default_model,
    pin,
)


class Buckets:
    """Quantiles of a scorer histogram over the last interval (bucket deltas, interpolated
    within the bucket as Prometheus' histogram_quantile does)."""

    def __init__(self, port: int, name: str) -> None:
        self.port, self.name = port, name
        self.last = self._read()

    def _read(self) -> list[tuple[float, float]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = []
        for line in text.splitlines():
            if line.startswith(self.name + "_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
        return sorted(out)

    def interval_quantiles(self, prefix: str) -> dict[str, float]:
        now = self._read()
        delta = [(le, c - c0) for (le, c), (_, c0) in zip(now, self.last, strict=True)]
        self.last = now
        total = delta[-1][1] if delta else 0.0
        out = {}
        for q in (0.5, 0.99):
            rank, lower, below, value = q * total, 0.0, 0.0, math.nan
            for le, cum in delta:
                if cum >= rank and total:
                    upper = le if math.isfinite(le) else lower
                    share = (rank - below) / (cum - below) if cum > below else 1.0
                    value = lower + (upper - lower) * share
                    break
                lower, below = le, cum
            out[f"{prefix}_p{int(q * 100)}_ms"] = round(value * 1000, 2)
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--out", default="build/soak.json")
    args = parser.parse_args()
    build = Path(args.out).parent
    build.mkdir(parents=True, exist_ok=True)
    pin(LOAD_CPU)
    print("training the model and generating the stream...", flush=True)
    model, decision = default_model(
        generate(SynthConfig(users=10_000, days=7.0, seed=7)), build, "soak"
    )
    need = int(args.rate * args.seconds)
    frame = generate(SynthConfig(users=20_000, days=need / 20_000 / 2.9 + 1, seed=77))
    frame = frame.iloc[:need]
    items = list(zip((u.encode() for u in frame["user_id"]), to_payloads(frame), strict=True))
    del frame
    print(f"{len(items):,} transactions; offering {args.rate:,} tx/s", flush=True)

    samples: list[dict[str, Any]] = []
    with MockCluster() as cluster:
        bs = cluster.bootstrap_servers
        for topic in ("soak-in", "bench-load-decisions", "bench-alerts", "bench-dlq"):
            cluster.create_topic(topic, args.partitions)
        proc, port = _start_scorer(
            build, bs, model.model_dir, "soak-in", "soak", decision, "bench-load-decisions"
        )
        scorer = psutil.Process(proc.pid)
        me = psutil.Process()  # this process: the mock broker and the load generator
        scorer.cpu_percent()  # starts the CPU-time windows
        me.cpu_percent()
        producer = Producer(
            {"bootstrap.servers": bs, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
        )
        e2e, batch = (
            Buckets(port, "fraud_event_to_decision_seconds"),
            Buckets(port, "fraud_batch_processing_seconds"),
        )
        start = time.perf_counter()
        next_sample = start + args.sample_every

        def sample(_sent: int) -> None:
            nonlocal next_sample
            now = time.perf_counter()
            if now < next_sample:
                return
            next_sample += args.sample_every
            samples.append(
                {
                    "t_s": round(now - start, 1),
                    "rss_mib": round(scorer.memory_info().rss / 2**20, 1),
                    "scorer_cpu_pct": scorer.cpu_percent(),
                    "broker_and_load_cpu_pct": me.cpu_percent(),
                    "users_in_state": _metric(port, "fraud_state_users"),
                    "lag": _metric(port, "fraud_consumer_lag"),
                    "decided": _metric(port, "fraud_transactions_total"),
                    **e2e.interval_quantiles("e2e"),
                    **batch.interval_quantiles("batch"),
                }
            )
            print(samples[-1], flush=True)

        try:
            send_paced(producer, "soak-in", items, args.rate, every=50, on_progress=sample)
            producer.flush(60)
        finally:
            proc.terminate()
            proc.wait(60)
    report = {
        "offered_tx_s": args.rate,
        "seconds": args.seconds,
        "partitions": args.partitions,
        "samples": samples,
    }
    steady = [s for s in samples if s["t_s"] >= args.seconds / 2]  # the second half
    if len(steady) >= 2:
        rss = [s["rss_mib"] for s in steady]
        report["second_half"] = {
            "rss_mib_min": min(rss),
            "rss_mib_max": max(rss),
            "rss_growth_mib_per_min": round(
                float(np.polyfit([s["t_s"] / 60 for s in steady], rss, 1)[0]), 2
            ),
            "e2e_p99_ms_min": min(s["e2e_p99_ms"] for s in steady),
            "e2e_p99_ms_max": max(s["e2e_p99_ms"] for s in steady),
            "batch_p99_ms_min": min(s["batch_p99_ms"] for s in steady),
            "batch_p99_ms_max": max(s["batch_p99_ms"] for s in steady),
            "scorer_cpu_pct_max": max(s["scorer_cpu_pct"] for s in steady),
            "users_in_state_max": max(s["users_in_state"] for s in steady),
        }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report.get("second_half"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
