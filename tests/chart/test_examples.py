"""The example manifests are valid FraudDetectors (the operator's own spec model; the real API
server checks them in tests/e2e) and the kind script at least parses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from fraud_operator.spec import FraudDetectorSpec
from fraud_operator.validation import Problem, check_rules, feature_set_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if p.name != "kind-model-server.yaml"], ids=lambda p: p.stem
)
def test_example_detectors_are_valid(path: Path) -> None:
    detectors = [
        d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "FraudDetector"
    ]
    assert len(detectors) == 1
    spec = FraudDetectorSpec.model_validate(detectors[0]["spec"])
    assert check_rules(spec) is None
    assert not isinstance(feature_set_of(spec), Problem)


def test_examples_cover_what_the_readme_promises() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"minimal", "scram-tls", "canary", "sinks", "entity-features"} <= names
    canary = next(d for d in yaml.safe_load_all((ROOT / "examples/canary.yaml").read_text()) if d)
    assert canary["spec"]["rollout"]["steps"]


def test_kind_script_parses() -> None:
    result = subprocess.run(
        ["bash", "-n", str(ROOT / "scripts/kind-up.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and len(config["nodes"]) == 3
