from __future__ import annotations

from collections.abc import Iterator

import pytest
from fraud_scorer.mock_cluster import MockCluster

from tests.integration.harness import TOPICS


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mc:
        for topic in TOPICS.values():
            mc.create_topic(topic, 4)
        yield mc
