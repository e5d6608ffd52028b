"""``fraud-train``: the training CLI (:mod:`fraud_training.cli`)."""

from __future__ import annotations

from fraud_runtime.extras import require

TRAINING_MODULES = ("sklearn", "lightgbm", "onnx", "pandas", "typer", "rich", "onnxruntime")


def main() -> None:
    require("fraud-train", "training", TRAINING_MODULES)
    from fraud_training.cli import app

    app()


if __name__ == "__main__":
    main()
