"""``python bench/pipeline_worker.py MODEL_DIR PAYLOADS``: rows per second of the scoring
pipeline (``BatchScorer.process``: decode, features, model, rules, encode) over the
newline-separated wire messages in PAYLOADS, in batches of 2,000, on one pinned CPU.

Run by ``bench/run_bench.py --baseline REV`` once with this tree's code and once with the
revision's (``PYTHONPATH``), alternately: it uses only the pipeline API both share.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RULES = json.loads(os.environ.get("BENCH_RULES", "[]"))


class Rec:
    __slots__ = ("_offset", "_v")

    def __init__(self, v: bytes, offset: int) -> None:
        self._v, self._offset = v, offset

    def value(self) -> bytes:
        return self._v

    def key(self) -> None:
        return None

    def partition(self) -> int:
        return self._offset % 16

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "t"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_800_000_000_000)

    def headers(self) -> None:
        return None


def main() -> int:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    from fraud_scorer.config import RuleSpec
    from fraud_scorer.features import FeatureEngine
    from fraud_scorer.model import load_model
    from fraud_scorer.pipeline import BatchScorer
    from fraud_scorer.rules import compile_rules

    records = [Rec(v, i) for i, v in enumerate(Path(sys.argv[2]).read_bytes().split(b"\n"))]
    scorer = BatchScorer(
        model=load_model(Path(sys.argv[1])),
        ruleset=compile_rules([RuleSpec.model_validate(r) for r in RULES]),
        engine=FeatureEngine(),
        detector="bench",
        track="stable",
        max_message_bytes=65536,
    )
    started = time.perf_counter()
    for i in range(0, len(records), 2000):
        scorer.process(records[i : i + 2000])  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    print(json.dumps({"rows": len(records), "rows_per_s": len(records) / elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
