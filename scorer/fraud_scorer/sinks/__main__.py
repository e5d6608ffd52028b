"""``fraud-sink --config sink.yaml``: run one sink process (webhook or case store) until SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraud-sink", description=__doc__)
    parser.add_argument("--config", type=Path, help="sink YAML (the operator's ConfigMap)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    from fraud_scorer.service import configure_logging, install_signal_handlers
    from fraud_scorer.sinks.config import load_sink_settings
    from fraud_scorer.sinks.service import FatalError, SinkService

    configure_logging(args.log_level)
    log = structlog.get_logger("fraud_sink")
    try:
        service = SinkService(load_sink_settings(args.config))
    except (ValueError, OSError) as exc:
        log.error("cannot start", error=str(exc))
        return 2
    install_signal_handlers(service)
    try:
        service.run()
    except FatalError as exc:
        log.error("fatal, exiting without committing", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
