"""Which input offsets may be stored, and when: at-least-once by construction.

A batch's offsets become *pending* once everything it produced has been handed to the producer;
they are stored (``enable.auto.offset.store=false`` + ``store_offsets``) only once the broker
has acknowledged all of it. librdkafka then commits stored offsets, in the background or when
the process commits explicitly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from confluent_kafka import TopicPartition

Key = tuple[str, int]


class _Record(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


class OffsetTracker:
    """The next offset to store per (topic, partition), and how long the oldest has waited."""

    def __init__(self, store_after_s: float) -> None:
        self.store_after_s = store_after_s
        self._next: dict[Key, int] = {}
        self._since: float | None = None

    def __bool__(self) -> bool:
        return bool(self._next)

    def done(self, records: Iterable[_Record]) -> None:
        """The records' outputs were handed to the producer; offsets grow within a partition,
        so the last record of each partition wins."""
        for m in records:
            self._next[(m.topic(), m.partition())] = m.offset() + 1  # type: ignore[index,operator]
        if self._next and self._since is None:
            self._since = time.monotonic()

    def overdue(self) -> bool:
        """Pending for longer than ``store_after_s``: under steady load the producer queue is
        never empty, so the caller flushes rather than wait for a quiet moment."""
        return self._since is not None and time.monotonic() - self._since > self.store_after_s

    def take(self, only: set[Key] | None = None) -> list[TopicPartition]:
        """Remove and return the pending offsets (of ``only`` those partitions, if given)."""
        keys = [k for k in self._next if only is None or k in only]
        taken = [TopicPartition(t, p, self._next.pop((t, p))) for t, p in keys]
        if not self._next:
            self._since = None
        return taken

    def forget(self, keys: Iterable[Key]) -> None:
        """Partitions lost without a chance to commit: their new owner redoes the work."""
        for key in keys:
            self._next.pop(key, None)
        if not self._next:
            self._since = None
