"""Producing at a fixed offered rate: the load of the demo, the kind cluster's synthetic
traffic and the reliability tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol


class _Producer(Protocol):
    def produce(self, topic: str, value: bytes | None, key: bytes | None) -> None: ...
    def poll(self, timeout: float) -> int: ...


def send_paced(
    producer: _Producer,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes]],
    rate: float,
    *,
    every: int = 100,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Produce ``(key, value)`` items to ``topic`` at ``rate`` per second; every ``every``
    messages serve delivery reports, report progress and sleep off any lead. A full queue
    (the broker is away) waits, as a real producer would. Returns the number sent; the caller
    flushes."""
    sent, start = 0, time.monotonic()
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        if sent % every == 0:
            producer.poll(0)
            if on_progress is not None:
                on_progress(sent)
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return sent
