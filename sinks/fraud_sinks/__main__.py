"""``fraud-sink --config sink.yaml``: run one sink process (webhook or case store) until SIGTERM.

Also the entry of ``fraud-cases``, the analysts' CLI (:mod:`fraud_sinks.cli`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fraud_runtime.extras import require

if TYPE_CHECKING:
    from fraud_sinks.service import SinkService

SINK_MODULES = ("confluent_kafka", "prometheus_client", "structlog", "psycopg")
CASES_MODULES = ("psycopg", "typer", "rich", "confluent_kafka")


def _build(config: Path | None) -> SinkService:
    from fraud_sinks.config import load_sink_settings
    from fraud_sinks.service import SinkService

    return SinkService(load_sink_settings(config))


def main(argv: list[str] | None = None) -> int:
    require("fraud-sink", "sinks", SINK_MODULES)
    from fraud_runtime.process import run_main

    return run_main(
        argv, prog="fraud-sink", description=__doc__, log_name="fraud_sink", build=_build
    )


def cases() -> None:
    require("fraud-cases", "sinks", CASES_MODULES)
    from fraud_sinks.cli import app

    app()


if __name__ == "__main__":
    sys.exit(main())
