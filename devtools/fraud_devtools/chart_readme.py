"""The chart's README, generated from the comments in its ``values.yaml``:
``python -m fraud_devtools.chart_readme > charts/fraud-detector/README.md``.

A value is documented by the ``# --`` comment above it (the helm-docs convention; following
``#`` lines continue it). The table lists every documented value with its default, so the
README cannot drift from the values; ``tests/chart/test_chart.py`` fails if the committed
file differs from this output.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "fraud-detector"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")


def documented(values_text: str) -> list[tuple[str, str]]:
    """``(dotted key, description)`` for each value with a ``# --`` comment, in file order."""
    out: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if match is None:
            if not stripped:
                pending = []
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match["key"]))
        if pending:
            out.append((".".join(k for _, k in path), " ".join(pending)))
            pending = []
    return out


def default_of(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def render() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    rows = []
    for key, description in documented(text):
        default = json.dumps(default_of(values, key), separators=(", ", ": "))
        default, cell = (text.replace("|", "\\|") for text in (default, description))
        rows.append(f"| `{key}` | `{default}` | {cell} |")
    return "\n".join([
        f"# {chart['name']}",
        "",
        f"{chart.get('description', '')}",
        "",
        f"Chart version {chart['version']}, app version {chart.get('appVersion', '')}. "
        "Installing, alerts, the dashboard and upgrades: `docs/deploy.md` in the repository; "
        "the FraudDetector resource: `docs/operator.md`.",
        "",
        "```bash",
        "helm install fraud-detector charts/fraud-detector -n fraud-system --create-namespace",
        "```",
        "",
        "## Values",
        "",
        "Generated from the comments in `values.yaml` by `python -m fraud_devtools.chart_readme`;"
        " `values.schema.json` checks every value (`helm lint --strict`).",
        "",
        "| key | default | description |",
        "| --- | --- | --- |",
        *rows,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.stdout.write(render())
