"""A consumed Kafka record for feeding :class:`fraud_scorer.pipeline.BatchScorer` in tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Msg:
    """A consumed record, as confluent_kafka.Message presents it."""

    _value: bytes | None
    _key: bytes | None = b"u1"
    _partition: int = 0
    _offset: int = 0
    _headers: list[tuple[str, bytes | None]] | None = None
    _ts_ms: int = field(default=1_800_000_000_000)
    _topic: str = "transactions"

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return self._topic

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts_ms)

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers
