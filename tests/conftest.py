"""Shared fixtures: a small trained model artifact and synthetic transactions."""

from __future__ import annotations

from pathlib import Path

import pytest
from fraud_training.synth import LabeledTransaction, SynthConfig, generate
from fraud_training.train import TrainReport, train_and_export


@pytest.fixture(scope="session")
def small_stream() -> list[LabeledTransaction]:
    return generate(SynthConfig(users=1500, days=3.0, seed=3))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainReport:
    events = generate(SynthConfig(users=3000, days=5.0, seed=5, fraud_users_share=0.05))
    return train_and_export(events, tmp_path_factory.mktemp("model"), version="test-1")


@pytest.fixture(scope="session")
def model_dir(trained: TrainReport) -> Path:
    return trained.model_dir
