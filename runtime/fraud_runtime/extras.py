"""Console scripts name the extra they need instead of failing with an ImportError.

Every entry module imports only the standard library at the top and calls :func:`require`
first, so a script installed in an image without its extra (the operator image carries the
scorer's scripts: one distribution) says what to install and exits 2.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence


def require(script: str, extra: str, modules: Sequence[str]) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        sys.stderr.write(
            f"{script} needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install 'fraud-detector[{extra}]'\n"
        )
        raise SystemExit(2)
