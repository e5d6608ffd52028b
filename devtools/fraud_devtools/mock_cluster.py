"""An in-process Kafka-protocol broker: librdkafka's mock cluster.

librdkafka (shipped inside the confluent-kafka wheel) contains a real Kafka protocol server
used for its own tests. We drive its C API with ctypes so we can create topics with a chosen
partition count (the mock has no CreateTopics) and take brokers down and up. Any Kafka client
can connect to :attr:`MockCluster.bootstrap_servers` on 127.0.0.1.

Used by ``make demo``, the benchmarks and the integration tests; never by production code.
"""

from __future__ import annotations

import ctypes
import glob
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import confluent_kafka

_RD_KAFKA_PRODUCER = 0


_P, _S, _I = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
# The C functions we call: name -> (return type, argument types).
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "rd_kafka_conf_new": (_P, []),
    "rd_kafka_conf_set": (_I, [_P, _S, _S, _S, ctypes.c_size_t]),
    "rd_kafka_new": (_P, [_I, _P, _S, ctypes.c_size_t]),
    "rd_kafka_destroy": (None, [_P]),
    "rd_kafka_mock_cluster_new": (_P, [_P, _I]),
    "rd_kafka_mock_cluster_destroy": (None, [_P]),
    "rd_kafka_mock_cluster_bootstraps": (_S, [_P]),
    "rd_kafka_mock_topic_create": (_I, [_P, _S, _I, _I]),
    "rd_kafka_mock_broker_set_down": (_I, [_P, ctypes.c_int32]),
    "rd_kafka_mock_broker_set_up": (_I, [_P, ctypes.c_int32]),
    "rd_kafka_mock_broker_set_rtt": (_I, [_P, ctypes.c_int32, _I]),
    "rd_kafka_mock_partition_set_leader": (_I, [_P, _S, ctypes.c_int32, ctypes.c_int32]),
    "rd_kafka_mock_coordinator_set": (_I, [_P, _S, _S, ctypes.c_int32]),
    "rd_kafka_mock_broker_set_host_port": (_I, [_P, ctypes.c_int32, _S, ctypes.c_uint16]),
}


# Where each platform's confluent-kafka wheel keeps its bundled librdkafka (auditwheel on
# Linux, delocate on macOS, delvewheel on Windows).
_BUNDLED = (
    ("confluent_kafka.libs", "librdkafka*.so*"),
    ("confluent_kafka/.dylibs", "librdkafka*.dylib"),
    ("confluent_kafka.libs", "librdkafka*.dll"),
    ("confluent_kafka", "librdkafka*.dll"),
)


def bundled_librdkafka(site_packages: Path) -> Path | None:
    """The librdkafka the confluent-kafka wheel installed under ``site_packages``."""
    for folder, pattern in _BUNDLED:
        found = sorted(glob.glob(str(site_packages / folder / pattern)))
        if found:
            return Path(found[0])
    return None


def _librdkafka() -> ctypes.CDLL:
    site_packages = Path(confluent_kafka.__file__).parent.parent
    path = bundled_librdkafka(site_packages)
    if path is None:
        raise RuntimeError(
            f"librdkafka not found inside the confluent-kafka wheel ({site_packages})"
        )
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class MockCluster:
    """A running mock Kafka cluster; use as a context manager or call :meth:`close`."""

    def __init__(self, brokers: int = 1, default_partitions: int = 4) -> None:
        self._lib = _librdkafka()
        conf = self._lib.rd_kafka_conf_new()
        err = ctypes.create_string_buffer(512)
        # A quiet handle whose only job is to own the mock cluster.
        self._lib.rd_kafka_conf_set(conf, b"log_level", b"0", err, len(err))
        self._rk = self._lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, err, len(err))
        if not self._rk:
            raise RuntimeError(f"rd_kafka_new failed: {err.value.decode()}")
        self._mc = self._lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._mc:
            self._lib.rd_kafka_destroy(self._rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap_servers: str = self._lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()
        # The brokers' loopback ports, broker 1's first (the bootstrap list's order).
        self.ports = [int(a.rsplit(":", 1)[1]) for a in self.bootstrap_servers.split(",")]
        self.default_partitions = default_partitions
        self.brokers = brokers

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        rc = self._lib.rd_kafka_mock_topic_create(
            self._mc, name.encode(), partitions or self.default_partitions, 1
        )
        if rc != 0:
            raise RuntimeError(f"creating mock topic {name!r} failed with error {rc}")

    def broker_down(self, broker_id: int = 1) -> None:
        self._lib.rd_kafka_mock_broker_set_down(self._mc, broker_id)

    def broker_up(self, broker_id: int = 1) -> None:
        self._lib.rd_kafka_mock_broker_set_up(self._mc, broker_id)

    def set_rtt(self, broker_id: int, rtt_ms: int) -> None:
        """Delay every response of ``broker_id`` by ``rtt_ms`` (0: no delay): a slow broker."""
        rc = self._lib.rd_kafka_mock_broker_set_rtt(self._mc, broker_id, rtt_ms)
        if rc != 0:
            raise RuntimeError(f"setting the round-trip time of broker {broker_id} failed: {rc}")

    def set_leader(self, topic: str, partition: int, broker_id: int) -> None:
        """Move a partition's leadership to another broker (then take that broker down to make
        just this partition unavailable; the mock crashes on a leader of -1)."""
        rc = self._lib.rd_kafka_mock_partition_set_leader(
            self._mc, topic.encode(), partition, broker_id
        )
        if rc != 0:
            raise RuntimeError(f"setting the leader of {topic}[{partition}] failed with {rc}")

    def set_coordinator(self, group: str, broker_id: int) -> None:
        """Pin a consumer group's coordinator to one broker."""
        rc = self._lib.rd_kafka_mock_coordinator_set(self._mc, b"group", group.encode(), broker_id)
        if rc != 0:
            raise RuntimeError(f"setting the coordinator of {group} failed with {rc}")

    def advertise(self, host: str) -> None:
        """Have every broker advertise ``host`` (on its own port) instead of 127.0.0.1.

        The brokers still listen on 127.0.0.1 only; something forwarding ``host``'s ports to
        them (the node tier's forwarders on its bridge, tests/e2e/node.py) lets clients that
        cannot reach the machine's loopback, such as pods, use the cluster."""
        for broker_id, port in enumerate(self.ports, start=1):
            rc = self._lib.rd_kafka_mock_broker_set_host_port(
                self._mc, broker_id, host.encode(), port
            )
            if rc != 0:
                raise RuntimeError(f"advertising broker {broker_id} at {host} failed: {rc}")
        self.bootstrap_servers = ",".join(f"{host}:{port}" for port in self.ports)

    def close(self) -> None:
        if self._mc:
            self._lib.rd_kafka_mock_cluster_destroy(self._mc)
            self._mc = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def pid_env() -> dict[str, str]:
    """Environment for child processes that should not inherit librdkafka debug settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RDKAFKA_")}
