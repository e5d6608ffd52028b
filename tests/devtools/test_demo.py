"""``make demo`` end to end, small: a model trained on the demo's feature set, real entity
stage and scorer processes on the mock cluster, paced traffic with malformed messages, and a
report in which nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fraud_devtools.demo import main

pytestmark = pytest.mark.integration


def test_the_demo_decides_or_dead_letters_every_message(tmp_path: Path) -> None:
    args = ["--transactions", "3000", "--rate", "3000", "--users", "600"]
    code = main(
        [*args, "--train-users", "800", "--malformed-share", "0.01", "--build-dir", str(tmp_path)]
    )
    report = json.loads((tmp_path / "demo-report.json").read_text())
    assert code == 0, report
    assert report["transactions_produced"] == 3000
    assert report["decisions"] == 3000
    assert sum(report["dead_letters"].values()) == report["malformed_produced"] == 30
    assert report["lost"] == 0 and report["scorer_exit_code"] == 0
    stage = report["entity_stage"]
    assert stage["exit_code"] == 0
    assert stage["folded"] == 2 * 3000  # each transaction for its merchant and its device
    assert report["feature_set"].startswith("fs-")
