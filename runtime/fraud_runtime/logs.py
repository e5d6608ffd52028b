"""JSON logs through structlog, with card numbers masked in every event."""

from __future__ import annotations

import logging

import structlog

from fraud_runtime.redact import mask_event


def first_line(exc: BaseException) -> str:
    """An exception's first line, or its type's name when it has no message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_logging(level: str = "info") -> None:
    """JSON lines on stdout from ``level`` up (one of :data:`LOG_LEVELS`)."""
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
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
