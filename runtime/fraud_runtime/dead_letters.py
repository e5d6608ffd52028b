"""The metadata every dead letter carries, whoever gave up on the message."""

from __future__ import annotations

from typing import Protocol

from fraud_runtime.redact import mask_pans


class Located(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


def dead_letter_headers(
    msg: Located, reason: str, detail: str, detector: str, **where: str
) -> list[tuple[str, bytes]]:
    """The ``dlq.*`` headers of every dead letter, the scorer's and the sinks' alike: the
    reason, the detail (card numbers masked, at most 512 bytes), where the message came
    from, and who gave up on it (``where``: e.g. ``track=stable`` or ``sink=webhook``)."""
    return [
        ("dlq.reason", reason.encode()),
        ("dlq.detail", mask_pans(detail).encode()[:512]),
        ("dlq.source.topic", (msg.topic() or "").encode()),
        ("dlq.source.partition", str(msg.partition()).encode()),
        ("dlq.source.offset", str(msg.offset()).encode()),
        ("dlq.detector", detector.encode()),
        *((f"dlq.{k}", v.encode()) for k, v in where.items()),
    ]
