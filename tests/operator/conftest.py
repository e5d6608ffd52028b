from __future__ import annotations

from typing import Any

import pytest
from fraud_operator.builders import Detector
from fraud_operator.spec import FraudDetectorSpec

SHA = "sha256:" + "c" * 64


def spec_dict(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kafka": {"bootstrapServers": "kafka:9092"},
        "topics": {"input": "tx", "decisions": "dec", "alerts": "alerts", "deadLetter": "dlq"},
        "model": {"version": "m1", "uri": "https://models.example/m1/", "digest": SHA},
        "rules": [{"name": "big", "expression": "tx.amount > 1000.0"}],
    }
    spec.update(overrides)
    return spec


def make_detector(**overrides: Any) -> Detector:
    return Detector(
        "retail", "shop", "uid-1", FraudDetectorSpec.model_validate(spec_dict(**overrides))
    )


@pytest.fixture
def detector() -> Detector:
    return make_detector()
