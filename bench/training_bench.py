"""Training-side benchmark: data generation, feature replay, and isolation-forest ONNX speed.

Writes ``build/bench-training.json``:

- ``synth``: seconds to generate ``--transactions`` synthetic transactions (goal: 1M in < 60 s);
- ``payloads`` / ``features``: wire encoding and the scorer-feature replay, rows per second;
- ``handbook``: seconds to simulate the handbook's 183 days and compute its 15 features;
- ``isolation_forest``: graph nodes and per-row / per-batch latency of our compact graph and of
  skl2onnx's, on the same fitted forest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fraud_training import handbook as hb
from fraud_training.data import features_from_payloads, to_payloads
from fraud_training.models import fit
from fraud_training.onnx_export import to_onnx
from fraud_training.synth import SynthConfig, generate
from skl2onnx import to_onnx as skl2onnx_convert


def _session(model: Any) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def _latency(session: ort.InferenceSession, x: np.ndarray[Any, Any]) -> dict[str, float]:
    name = session.get_inputs()[0].name
    session.run(None, {name: x[:1]})
    rows = 300
    start = time.perf_counter()
    for i in range(rows):
        session.run(None, {name: x[i : i + 1]})
    per_row = (time.perf_counter() - start) / rows
    start = time.perf_counter()
    session.run(None, {name: x[:5000]})
    batch = time.perf_counter() - start
    return {"per_row_ms": per_row * 1e3, "batch_5000_ms": batch * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--out", default="build/bench-training.json")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "arch": platform.machine(),
            "python": platform.python_version(),
        }
    }

    users = max(args.transactions // 20, 100)  # 2.9 tx/user/day over 7 days
    start = time.perf_counter()
    frame = generate(SynthConfig(users=users, days=7.0, seed=1))
    seconds = time.perf_counter() - start
    results["synth"] = {"rows": len(frame), "seconds": seconds, "rows_per_s": len(frame) / seconds}
    print(f"synth: {len(frame):,} rows in {seconds:.1f} s", flush=True)

    start = time.perf_counter()
    payloads = to_payloads(frame)
    seconds = time.perf_counter() - start
    results["payloads"] = {"rows_per_s": len(payloads) / seconds}
    start = time.perf_counter()
    data = features_from_payloads(payloads, frame["label"].to_numpy(np.int8))
    seconds = time.perf_counter() - start
    results["features"] = {"rows_per_s": len(payloads) / seconds}
    print(f"features: {len(payloads) / seconds:,.0f} rows/s", flush=True)

    start = time.perf_counter()
    tx = hb.simulate()
    simulated = time.perf_counter() - start
    hb.features(tx)
    results["handbook"] = {
        "rows": len(tx),
        "simulate_seconds": simulated,
        "features_seconds": time.perf_counter() - start - simulated,
    }
    print(f"handbook: {results['handbook']}", flush=True)

    forest = fit(
        "isolation-forest",
        data.x[:200_000],
        None,
        feature_names=data.feature_names,
        feature_set="v1",
        params={"n_estimators": 200, "max_samples": 256},
    )
    ours, reference = (
        to_onnx(forest),
        skl2onnx_convert(forest.estimator, data.x[:1], target_opset={"": 15, "ai.onnx.ml": 3}),
    )
    x = data.x[200_000:210_000]
    results["isolation_forest"] = {
        "trees": 200,
        "ours": {"nodes": len(ours.graph.node), **_latency(_session(ours), x)},
        "skl2onnx": {"nodes": len(reference.graph.node), **_latency(_session(reference), x)},
    }
    print(f"isolation forest: {results['isolation_forest']}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
