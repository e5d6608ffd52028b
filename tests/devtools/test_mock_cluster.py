"""Finding the librdkafka that confluent-kafka's wheel bundles, on every platform's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from fraud_devtools.mock_cluster import MockCluster, bundled_librdkafka


@pytest.mark.parametrize(
    "layout",
    [
        "confluent_kafka.libs/librdkafka-d8a0c1e3.so.1",  # Linux (auditwheel)
        "confluent_kafka/.dylibs/librdkafka.1.dylib",  # macOS (delocate)
        "confluent_kafka.libs/librdkafka-5a1b2c3d.dll",  # Windows (delvewheel)
    ],
)
def test_the_bundled_library_is_found_in_each_wheel_layout(tmp_path: Path, layout: str) -> None:
    lib = tmp_path / layout
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    (tmp_path / "confluent_kafka").mkdir(exist_ok=True)
    assert bundled_librdkafka(tmp_path) == lib
    assert bundled_librdkafka(tmp_path / "elsewhere") is None


def test_this_machines_wheel_runs_a_mock_cluster() -> None:
    with MockCluster() as cluster:
        assert cluster.bootstrap_servers.startswith("127.0.0.1:")
