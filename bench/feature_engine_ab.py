"""``python bench/feature_engine_ab.py --baseline REV``: the feature engine of REV against this
tree's, on the same synthetic events, interleaved in one process with gc off (an offline
yardstick for changes to ``fraud_scorer/features.py``; the deployed path is measured by
``make bench BENCH_BASELINE=REV``). Prints the ratio of best times, this / baseline.

``--declared`` instead compares this tree's declared engine given the v1 definitions
(``fraud_scorer.declared_features``) with the hand-written v1 engine, checking that their rows
are identical: declared / hand as a speed ratio (docs/features.md)."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

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
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--baseline")
    group.add_argument("--declared", action="store_true")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    decoder = TransactionDecoder(1 << 16)
    events = []
    for raw in to_payloads(generate(SynthConfig(users=3000, days=7, seed=3))):
        tx = decoder.decode(raw)
        assert isinstance(tx, Transaction)
        events.append((tx, tx.timestamp.timestamp()))
    if args.declared:
        from fraud_scorer.declared_features import DeclaredFeatureEngine
        from fraud_scorer.feature_defs import V1_DEFINITIONS

        engines: dict[str, Callable[[], Any]] = {
            "baseline": this.FeatureEngine,
            "this": lambda: DeclaredFeatureEngine(V1_DEFINITIONS),
        }
        label = "declared/hand"
    else:
        engines = {
            "baseline": baseline_module(args.baseline).FeatureEngine,
            "this": this.FeatureEngine,
        }
        label = "this/baseline"
    best = {k: float("inf") for k in engines}
    outputs: dict[str, list[list[float]]] = {}
    gc.disable()
    for i in range(args.rounds):
        order = list(engines.items())
        for name, make in order if i % 2 else order[::-1]:
            engine = make()
            started = time.perf_counter()
            rows = [engine.compute(0, tx, ts) for tx, ts in events]
            best[name] = min(best[name], time.perf_counter() - started)
            outputs[name] = rows
            gc.collect()
    assert len(outputs["this"]) == len(events)
    if args.declared:
        assert outputs["this"] == outputs["baseline"], "the declared engine's rows differ"
    if args.declared:  # as docs/features.md reports it: events/s, declared over hand-written
        ratio = best["baseline"] / best["this"]
        print(f"{len(events):,} events; best seconds {best}; {label} speed {ratio:.3f}")
    else:  # as before: time, this over baseline
        ratio = best["this"] / best["baseline"]
        print(f"{len(events):,} events; best seconds {best}; {label} {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
