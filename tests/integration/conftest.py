from __future__ import annotations

from collections.abc import Iterator

import pytest
from fraud_devtools.mock_cluster import MockCluster

from tests.integration.harness import TOPICS, kill_leftovers


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Every process a test started is gone after it, passed or failed (a failed test that
    made its own mock cluster once left a scorer and two sinks running)."""
    try:
        yield
    finally:
        kill_leftovers()


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    """A fresh mock cluster per test; scorers still running at the end are killed first."""
    with MockCluster() as mc:
        for topic in TOPICS.values():
            mc.create_topic(topic, 4)
        try:
            yield mc
        finally:
            kill_leftovers()
