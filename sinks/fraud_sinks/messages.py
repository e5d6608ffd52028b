"""What the sinks read: the scorer's decisions (transaction kept as raw JSON) and analysts'
labels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from fraud_scorer.contract import Decision


@dataclass(frozen=True)
class Label:
    """An analyst's verdict on one transaction."""

    transaction_id: str
    is_fraud: bool
    by: str
    at: datetime


class SinkDecision(Decision):
    """The scorer's decision as a sink reads it: the transaction stays raw JSON bytes (``null``
    when absent), so the case store stores it without decoding it."""

    transaction: msgspec.Raw = msgspec.Raw(b"null")  # type: ignore[assignment]

    def transaction_text(self) -> str | None:
        raw = bytes(self.transaction)
        return None if raw == b"null" else raw.decode()


class _LabelMessage(msgspec.Struct, forbid_unknown_fields=False):
    """An analyst's verdict on the labels topic."""

    transaction_id: str
    is_fraud: bool
    by: str
    at: datetime | None = None


def decode_decision(value: bytes | None) -> SinkDecision:
    if not value:
        raise ValueError("empty message")
    try:
        return msgspec.json.decode(value, type=SinkDecision)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a decision: {exc}") from exc


def decode_label(value: bytes | None) -> Label:
    try:
        lab = msgspec.json.decode(value or b"", type=_LabelMessage)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a label: {exc}") from exc
    at = lab.at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("label 'at' needs a time zone (e.g. 2026-11-22T10:00:00Z)")
    return Label(lab.transaction_id, lab.is_fraud, lab.by, at)


def as_dict(d: SinkDecision, transaction: str | dict[str, Any] | None) -> dict[str, Any]:
    """The decision as plain JSON types (its reason codes too), with ``transaction``."""
    out = msgspec.structs.asdict(d)
    out["transaction"] = transaction
    if d.why is not None:
        out["why"] = msgspec.to_builtins(d.why)
    return out
