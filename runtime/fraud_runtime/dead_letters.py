"""The metadata every dead letter carries, whoever gave up on the message."""

from __future__ import annotations

import hashlib
import json
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


# What a dead letter may weigh, value and headers together: below librdkafka's default
# message.max.bytes (1,000,000) with room for the record's own overhead. A message that was
# accepted near the broker's limit cannot come back with metadata added.
DEAD_LETTER_MAX_BYTES = 900_000


def bounded(
    value: bytes | None, headers: list[tuple[str, bytes]], limit: int = DEAD_LETTER_MAX_BYTES
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The dead letter's value and headers as they are if they fit in ``limit`` bytes; else a
    stub: the ``dlq.*`` metadata, the original's size and sha256 (``dlq.original.size``,
    ``dlq.original.sha256``, ``dlq.stub``) and a small JSON value saying the same, so that the
    message is accounted for even when its bytes cannot travel."""
    original = value or b""
    size = len(original) + sum(len(k) + len(v) for k, v in headers)
    if size <= limit:
        return value, headers
    digest = hashlib.sha256(original).hexdigest()
    kept = [(k, v) for k, v in headers if k.startswith("dlq.")][:16]
    kept = [(k, v[:512]) for k, v in kept]
    kept += [
        ("dlq.stub", b"true"),
        ("dlq.original.size", str(len(original)).encode()),
        ("dlq.original.sha256", digest.encode()),
    ]
    stub = json.dumps({"stub": True, "size": len(original), "sha256": digest}).encode()
    return stub, kept
