"""``python bench/feature_engine_ab.py --baseline REV``: the feature engine of REV against this
tree's, on the same synthetic events, interleaved in one process with gc off (an offline
yardstick for changes to ``fraud_scorer/features.py``; the deployed path is measured by
``make bench BENCH_BASELINE=REV``). Prints the ratio of best times, this / baseline."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import fraud_scorer.features as this
from fraud_scorer.contract import Transaction, TransactionDecoder
from fraud_training.data import to_payloads
from fraud_training.synth import SynthConfig, generate


def baseline_module(revision: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{revision}:scorer/fraud_scorer/features.py"],
        check=True,
        capture_output=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_features.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("baseline_features", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_features"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    decoder = TransactionDecoder(1 << 16)
    events = []
    for raw in to_payloads(generate(SynthConfig(users=3000, days=7, seed=3))):
        tx = decoder.decode(raw)
        assert isinstance(tx, Transaction)
        events.append((tx, tx.timestamp.timestamp()))
    engines = {"baseline": baseline_module(args.baseline), "this": this}
    best = {k: float("inf") for k in engines}
    gc.disable()
    for i in range(args.rounds):
        order = list(engines.items())
        for name, module in order if i % 2 else order[::-1]:
            engine = module.FeatureEngine()
            started = time.perf_counter()
            rows = [engine.compute(0, tx, ts) for tx, ts in events]
            best[name] = min(best[name], time.perf_counter() - started)
            if name == "this":
                assert len(rows) == len(events)
            gc.collect()
    ratio = best["this"] / best["baseline"]
    print(f"{len(events):,} events; best seconds {best}; this/baseline {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
