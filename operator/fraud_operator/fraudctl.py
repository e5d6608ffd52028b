"""``fraudctl`` and ``kubectl fraud``: the entry point of :mod:`fraud_operator.ctl`, which says
which extra to install when it is missing."""

from __future__ import annotations

from fraud_runtime.extras import require


def main() -> None:
    require("fraudctl", "ctl", ("kubernetes", "typer", "rich"))
    from fraud_operator.ctl import app

    app()


if __name__ == "__main__":
    main()
