"""``fraud-scorer --config scorer.yaml``: run one scorer process until SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraud-scorer", description=__doc__)
    parser.add_argument("--config", type=Path, help="scorer YAML (the operator's ConfigMap)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    from fraud_scorer.config import load_settings
    from fraud_scorer.model import ModelError
    from fraud_scorer.rules import RuleCompileError
    from fraud_scorer.service import (
        FatalError,
        ScorerService,
        configure_logging,
        install_signal_handlers,
    )

    configure_logging(args.log_level)
    log = structlog.get_logger("fraud_scorer")
    try:
        settings = load_settings(args.config)
        service = ScorerService(settings, config_path=args.config)
    except (ModelError, RuleCompileError, ValueError, OSError) as exc:
        # Configuration problems: say what is wrong and exit 2 (no restart will fix it).
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
