"""W3C Trace Context on Kafka records: the ``traceparent`` (and ``tracestate``) headers a
producer set on an input message are carried onto every message made from it (decisions,
alerts, dead letters), so a payment can be followed across systems.

Only a well-formed ``traceparent`` is carried (version 00-fe, non-zero ids, as the
recommendation says to check), with its ``tracestate`` bounded at 512 bytes; anything else is
dropped rather than passed downstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
_MAX_STATE: Final = 512
_FORMAT = re.compile(
    rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?$"
)

TraceHeaders = list[tuple[str, bytes]]


Headers = Iterable[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


def trace_context(headers: Headers) -> TraceHeaders | None:
    """The trace headers worth carrying from ``headers`` (a record's, as confluent-kafka
    gives them: a list of pairs, or a dict), or None."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    parent = state = None
    for name, raw in pairs:
        value = raw.encode() if isinstance(raw, str) else raw
        lowered = name.lower()
        if lowered == TRACEPARENT:
            parent = value
        elif lowered == TRACESTATE:
            state = value
    if not parent:
        return None
    match = _FORMAT.match(parent.strip())
    if match is None:
        return None
    version, trace_id, span_id, _, rest = match.groups()
    if version == b"ff" or trace_id == b"0" * 32 or span_id == b"0" * 16:
        return None
    if version == b"00" and rest:  # version 00 has exactly four fields
        return None
    out: TraceHeaders = [(TRACEPARENT, parent.strip())]
    if state and len(state) <= _MAX_STATE and _printable(state):
        out.append((TRACESTATE, state))
    return out


def _printable(value: bytes) -> bool:
    """Printable ASCII only (the recommendation's character set): a CR, LF or non-ASCII byte
    carried on would break the HTTP header the webhook sink makes of it."""
    return all(0x20 <= b <= 0x7E for b in value)
