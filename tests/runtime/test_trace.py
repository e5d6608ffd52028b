"""W3C trace context: what is carried from an input record's headers, and what is not."""

from __future__ import annotations

import pytest
from fraud_runtime.trace import trace_context

GOOD = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_carried_with_its_state() -> None:
    headers = [("content-type", b"application/json"), ("TraceParent", GOOD),
               ("tracestate", b"rojo=00f067aa0ba902b7")]  # fmt: skip
    assert trace_context(headers) == [
        ("traceparent", GOOD),
        ("tracestate", b"rojo=00f067aa0ba902b7"),
    ]
    # A later version may add fields; version 00 may not.
    assert trace_context([("traceparent", GOOD.replace(b"00-", b"01-", 1) + b"-what")])


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"00-xyz-01",
        GOOD + b"-extra",  # version 00 with a fifth field
        b"ff" + GOOD[2:],  # version ff is invalid
        b"00-" + b"0" * 32 + GOOD[35:],  # all-zero trace id
        GOOD[:36] + b"0" * 16 + b"-01",  # all-zero span id
        GOOD.upper(),  # hex is lower case
    ],
)
def test_a_broken_traceparent_is_dropped(value: bytes) -> None:
    assert trace_context([("traceparent", value), ("tracestate", b"a=b")]) is None


def test_no_headers_and_an_oversized_state() -> None:
    assert trace_context(None) is None and trace_context([]) is None
    assert trace_context([("traceparent", GOOD), ("tracestate", b"x" * 600)]) == [
        ("traceparent", GOOD)
    ]


@pytest.mark.parametrize("state", [b"a=b\r\nX-Injected: 1", "rojo=é".encode(), b"a=\x00b"])
def test_a_tracestate_that_is_not_printable_ascii_is_dropped(state: bytes) -> None:
    """It would become an HTTP header at the webhook sink; CR/LF or a non-ASCII byte there
    would make the alert undeliverable."""
    assert trace_context([("traceparent", GOOD), ("tracestate", state)]) == [("traceparent", GOOD)]
    future = GOOD.replace(b"00-", b"01-", 1) + b"-x\ry"
    assert trace_context([("traceparent", future)]) is None
