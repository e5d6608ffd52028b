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
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil
from confluent_kafka import Producer
from fraud_scorer.mock_cluster import MockCluster
from fraud_training.data import to_payloads
from fraud_training.synth import SynthConfig, generate
from fraud_training.train import train_and_export

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import LOAD_CPU, _consumer, _metric, _start_scorer, pin  # type: ignore[import-not-found]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--out", default="build/soak.json")
    args = parser.parse_args()
    build = Path(args.out).parent
    build.mkdir(parents=True, exist_ok=True)
    pin(LOAD_CPU)
    print("training the model and generating the stream...", flush=True)
    model = train_and_export(
        generate(SynthConfig(users=10_000, days=7.0, seed=7)),
        build / "soak-model",
        version="soak-1",
    )
    decision = {"review_at": round(model.review_at, 6), "block_at": round(model.block_at, 6)}
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
            cluster.create_topic(topic, 16)
        proc, port = _start_scorer(
            build, bs, model.model_dir, "soak-in", "soak", decision, "bench-load-decisions"
        )
        scorer = psutil.Process(proc.pid)
        reader = _consumer(bs, "soak-reader")
        reader.subscribe(["bench-load-decisions"])
        deadline = time.monotonic() + 30
        while not reader.assignment() and time.monotonic() < deadline:
            reader.poll(0.1)
        producer = Producer({"bootstrap.servers": bs, "linger.ms": 2})
        view = msgspec.json.Decoder(dict[str, Any]).decode
        window: list[float] = []
        start = time.perf_counter()
        next_sample = start + args.sample_every
        decided = 0
        try:
            for i, (k, v) in enumerate(items):
                producer.produce("soak-in", v, k)
                if i % 50 == 0:
                    producer.poll(0)
                    ahead = (i + 1) / args.rate - (time.perf_counter() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                    window += [
                        view(m.value() or b"")["latency_ms"]
                        for m in reader.consume(1000, 0)
                        if m.error() is None
                    ]
                    now = time.perf_counter()
                    if now >= next_sample:
                        next_sample += args.sample_every
                        decided += len(window)
                        lat = np.asarray(window) if window else np.zeros(1)
                        samples.append(
                            {
                                "t_s": round(now - start, 1),
                                "rss_mib": round(scorer.memory_info().rss / 2**20, 1),
                                "users_in_state": _metric(port, "fraud_state_users"),
                                "lag": _metric(port, "fraud_consumer_lag"),
                                "decided": decided,
                                "p50_ms": round(float(np.percentile(lat, 50)), 2),
                                "p99_ms": round(float(np.percentile(lat, 99)), 2),
                            }
                        )
                        print(samples[-1], flush=True)
                        window = []
            producer.flush(60)
        finally:
            reader.close()
            proc.terminate()
            proc.wait(60)
    report = {"offered_tx_s": args.rate, "seconds": args.seconds, "samples": samples}
    steady = [s for s in samples if s["t_s"] >= args.seconds / 2]  # the second half
    if len(steady) >= 2:
        rss = [s["rss_mib"] for s in steady]
        report["second_half"] = {
            "rss_mib_min": min(rss),
            "rss_mib_max": max(rss),
            "rss_growth_mib_per_min": round(
                float(np.polyfit([s["t_s"] / 60 for s in steady], rss, 1)[0]), 2
            ),
            "p99_ms_min": min(s["p99_ms"] for s in steady),
            "p99_ms_max": max(s["p99_ms"] for s in steady),
            "users_in_state_max": max(s["users_in_state"] for s in steady),
        }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report.get("second_half"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
