"""Backtest speed against the scoring pipeline's, on the same rows, in one pinned process.

Writes ``build/bench-rules.json``:

- ``pipeline_rows_per_s``: ``BatchScorer.process`` in batches of 2,000, as a scorer runs it
  (v1 features computed by its engine, 10 rules, the model, decisions with features, alerts);
- ``backtest_rows_per_s``: ``fraud-rules backtest``'s work on the same labelled rows, same
  rules and model: the point-in-time feature replay, then the decisions;
- ``backtest_to_pipeline``: their ratio (goal >= 1, issue 16), medians of interleaved rounds;
- ``staged_feature_replay_rows_per_s``: the feature replay alone on the default feature set
  (v1 plus merchant and device aggregates, through the entity stage's aggregator), for scale;
- ``reason_codes``: ``BatchScorer.process`` with the model's thresholds set so that 3% of
  transactions alert, with and without the model's reason codes (exact TreeSHAP of each alert
  the model raised), alternating: ``throughput_ratio`` (goal >= 0.9, issue 16).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fraud_rules.backtest import decide, history_of
from fraud_scorer import feature_sets
from fraud_scorer.config import DecisionSettings, RuleSpec
from fraud_scorer.feature_defs import parse_feature_set
from fraud_scorer.features import FeatureEngine
from fraud_scorer.model import Model, load_model
from fraud_scorer.pipeline import BatchScorer
from fraud_scorer.rules import RuleSet, compile_rules
from fraud_training.data import validate
from fraud_training.synth import SynthConfig, generate
from fraud_training.train import train_and_export
from run_bench import RULES, demo_features


class _Message:
    __slots__ = ("_ms", "_value")

    def __init__(self, value: bytes, ms: int) -> None:
        self._value, self._ms = value, ms

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def topic(self) -> str:
        return "t"

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ms)

    def headers(self) -> None:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="build/bench-rules.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    build = Path(args.out).parent
    build.mkdir(parents=True, exist_ok=True)
    print("backtest: training a v1 model, generating labelled traffic...", flush=True)
    trained = train_and_export(
        generate(SynthConfig(users=5_000, days=7.0, seed=7)), build / "bench-rules-model",
        version="backtest-1",
    )  # fmt: skip
    traffic = generate(SynthConfig(users=args.rows // 5, days=2.0, seed=21)).iloc[: args.rows]
    frame = validate(traffic.drop(columns=["scenario"]))
    decision = DecisionSettings(review_at=trained.review_at, block_at=trained.block_at)
    ruleset = compile_rules([RuleSpec.model_validate(r) for r in RULES], decision)
    model = load_model(trained.model_dir)

    def pipeline(
        payloads: list[bytes], ms: list[int], m: Model = model, rules: RuleSet = ruleset
    ) -> tuple[float, int]:
        """Rows/s of BatchScorer.process over the messages in batches of 2,000, and alerts."""
        scorer = BatchScorer(
            model=m, ruleset=rules, engine=FeatureEngine(), detector="bench",
            track="stable", max_message_bytes=65536,
        )  # fmt: skip
        messages = [_Message(p, t) for p, t in zip(payloads, ms, strict=True)]
        started, alerts = time.perf_counter(), 0
        for i in range(0, len(messages), 2000):
            alerts += len(scorer.process(messages[i : i + 2000]).alerts)  # type: ignore[arg-type]
        return len(messages) / (time.perf_counter() - started), alerts

    def backtest() -> tuple[float, list[bytes], list[int]]:
        started = time.perf_counter()
        history = history_of(frame, feature_sets.V1)
        decide(history, ruleset, model)
        rate = len(history) / (time.perf_counter() - started)
        return rate, list(history.payloads), (history.ts * 1000).astype(np.int64).tolist()

    runs: dict[str, list[float]] = {"pipeline": [], "backtest": []}
    for i in range(args.rounds):
        print(f"backtest: round {i + 1}/{args.rounds}...", flush=True)
        rate, payloads, ms = backtest()
        runs["backtest"].append(rate)
        runs["pipeline"].append(pipeline(payloads, ms)[0])
    staged = feature_sets.declared(parse_feature_set(demo_features()))
    started = time.perf_counter()
    history = history_of(frame, staged)
    staged_rate = len(history) / (time.perf_counter() - started)  # features only: no model

    print("reason codes: the pipeline at a 3% alert rate, with and without them...", flush=True)
    v1 = history_of(frame, feature_sets.V1)
    frame_scores = model.score(np.array(v1.rows, dtype=np.float32))
    alerting = DecisionSettings(
        review_at=float(np.quantile(frame_scores, 0.97)), block_at=1.0
    )  # the model alone raises 3% of alerts (the bench's rules add a few)
    explained, plain = model, load_model(trained.model_dir)
    plain.explainer = None
    quiet = compile_rules([RuleSpec.model_validate(r) for r in RULES], alerting)
    payloads = list(v1.payloads)
    ms = (v1.ts * 1000).astype(np.int64).tolist()
    codes: dict[str, list[float]] = {"with": [], "without": []}
    alerts = 0
    for i in range(args.rounds):
        order = [("with", explained), ("without", plain)]
        for label, m in order if i % 2 == 0 else order[::-1]:
            rate, alerts = pipeline(payloads, ms, m, quiet)
            codes[label].append(rate)
    assert explained.explainer is not None

    median = {k: float(np.median(v)) for k, v in runs.items()}
    result: dict[str, Any] = {
        "rows": len(frame),
        "rules": len(RULES),
        "pipeline_rows_per_s": round(median["pipeline"], 1),
        "backtest_rows_per_s": round(median["backtest"], 1),
        "backtest_to_pipeline": round(median["backtest"] / median["pipeline"], 3),
        "runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "staged_feature_replay_rows_per_s": round(staged_rate, 1),
        "reason_codes": {
            "alert_rate": round(alerts / len(payloads), 4),
            "tabulated": explained.explainer.tabulated,
            "with_rows_per_s": round(float(np.median(codes["with"])), 1),
            "without_rows_per_s": round(float(np.median(codes["without"])), 1),
            "throughput_ratio": round(
                float(np.median(codes["with"]) / np.median(codes["without"])), 3
            ),
            "runs": {k: [round(x, 1) for x in v] for k, v in codes.items()},
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
