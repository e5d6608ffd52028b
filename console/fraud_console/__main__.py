"""``fraud-console --config console.yaml``: the analyst console (docs/console.md).

``fraud-console hash-password`` reads a password from the terminal (or stdin) and prints the
hash the built-in login's ``auth.users.<name>.password`` takes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fraud_runtime.extras import require

MODULES = (
    "fastapi", "jinja2", "uvicorn", "psycopg", "psycopg_pool", "itsdangerous", "python_multipart",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["hash-password"]:
        import getpass

        from fraud_console.auth import hash_password

        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
        print(hash_password(password.rstrip("\n")))
        return 0
    require("fraud-console", "console", MODULES)
    parser = argparse.ArgumentParser(prog="fraud-console", description=__doc__)
    parser.add_argument(
        "--config", type=Path, default=None, help="settings YAML (secrets from the environment)"
    )
    opts = parser.parse_args(args)
    from fraud_console.server import serve

    return serve(opts.config)


if __name__ == "__main__":
    sys.exit(main())
