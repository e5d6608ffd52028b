"""Shared fixtures: synthetic transactions and a small trained model artifact."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fraud_training.synth import SynthConfig, generate
from fraud_training.train import TrainReport, train_and_export

from tests.servers import postgres_server

# The whole suite runs at a narrow terminal width: an assertion on CLI output that depends on
# where rich wraps lines (a longer temporary path once broke one in a fresh clone) fails on
# every machine, not only on some.
os.environ["COLUMNS"] = "52"


@pytest.fixture(scope="session")
def small_stream() -> pd.DataFrame:
    # Plenty of compromised merchants so rule tests see shell-merchant payments early on.
    return generate(
        SynthConfig(users=1500, days=3.0, seed=3, compromised_merchants_per_day_per_10k_users=60)
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainReport:
    frame = generate(SynthConfig(users=3000, days=5.0, seed=5, fraud_users_share=0.05))
    return train_and_export(frame, tmp_path_factory.mktemp("model"), version="test-1")


@pytest.fixture(scope="session")
def model_dir(trained: TrainReport) -> Path:
    return trained.model_dir


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (started here, stopped at the end)."""
    with postgres_server() as url:
        yield url
