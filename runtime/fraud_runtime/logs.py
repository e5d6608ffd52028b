"""JSON logs through structlog, with card numbers masked in every event."""

from __future__ import annotations

import logging

import structlog

from fraud_runtime.redact import mask_event


def first_line(exc: BaseException) -> str:
    """An exception's first line, or its type's name when it has no message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            mask_event,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
    )
