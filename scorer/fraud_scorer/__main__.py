"""``fraud-scorer --config scorer.yaml``: run one scorer process until SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fraud_runtime.extras import require

if TYPE_CHECKING:
    from fraud_scorer.service import ScorerService

SCORER_MODULES = ("numpy", "onnxruntime", "confluent_kafka", "prometheus_client", "structlog")


def _build(config: Path | None) -> ScorerService:
    from fraud_scorer.config import load_settings
    from fraud_scorer.service import ScorerService

    return ScorerService(load_settings(config), config_path=config)


def main(argv: list[str] | None = None) -> int:
    require("fraud-scorer", "scorer", SCORER_MODULES)
    from fraud_runtime.process import run_main

    from fraud_scorer.model import ModelError
    from fraud_scorer.rules import RuleCompileError

    return run_main(
        argv,
        prog="fraud-scorer",
        description=__doc__,
        log_name="fraud_scorer",
        build=_build,
        config_errors=(ModelError, RuleCompileError, ValueError, OSError),
    )


if __name__ == "__main__":
    sys.exit(main())
