from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from fraud_scorer.features import FEATURE_NAMES
from fraud_scorer.model import load_model, read_manifest
from fraud_training.synth import SCENARIOS, SynthConfig, generate
from fraud_training.train import TrainReport, encode_all, features_for


def test_generator_is_seeded_time_ordered_and_labelled() -> None:
    a = generate(SynthConfig(users=300, days=2.0, seed=1))
    assert a == generate(SynthConfig(users=300, days=2.0, seed=1))
    assert a != generate(SynthConfig(users=300, days=2.0, seed=2))
    times = [e.tx["timestamp"] for e in a]
    assert times == sorted(times)
    assert len({e.tx["transaction_id"] for e in a}) == len(a)
    big = generate(SynthConfig(users=3000, days=2.0, seed=4, fraud_users_share=0.2))
    scenarios = Counter(e.scenario for e in big if e.label)
    assert set(scenarios) == set(SCENARIOS)
    assert all(e.label == (e.scenario != "genuine") for e in big)


def test_training_features_are_the_scorers_features() -> None:
    events = generate(SynthConfig(users=200, days=1.0, seed=9))
    data = features_for(encode_all(events), [e.label for e in events])
    assert data.x.shape == (len(events), len(FEATURE_NAMES))
    assert data.x.dtype == np.float32


def test_exported_artifact_is_verified_and_loadable(trained: TrainReport, model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    assert manifest.feature_names == list(FEATURE_NAMES)
    assert manifest.metrics["onnx_max_abs_diff"] <= 1e-4
    assert 0.0 <= trained.review_at <= trained.block_at <= 1.0
    assert trained.metrics["roc_auc"] > 0.8
    assert load_model(model_dir).version == "test-1"
