"""``fraud-rules``: the rules CLI (:mod:`fraud_rules.cli`)."""

from __future__ import annotations

from fraud_runtime.extras import require


def main() -> None:
    require("fraud-rules", "rules", ("typer", "rich"))
    from fraud_rules.cli import app

    app()


if __name__ == "__main__":
    main()
