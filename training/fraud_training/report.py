"""Evaluation reports: ``report.json`` (everything), ``report.md`` (a table people read) and
``pr_curve.png`` (precision-recall curves of every evaluated model)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

COLUMNS: Final = (
    ("roc_auc", "ROC AUC"),
    ("average_precision", "AP"),
    ("card_precision_at_100", "CP@100"),
    ("recall_at_1pct_fpr", "recall @1% FPR"),
    ("alert_rate", "alert rate"),
    ("precision_at_threshold", "precision @thr"),
    ("recall_at_threshold", "recall @thr"),
)


@dataclass
class Row:
    name: str
    metrics: dict[str, float]
    labels: npt.NDArray[np.int8] | None = None  # for the PR curve
    scores: npt.NDArray[np.float64] | None = None
    published: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(title: str, rows: list[Row], notes: list[str], sections: list[str]) -> str:
    lines = [f"# {title}", ""]
    lines.append("| model | " + " | ".join(h for _, h in COLUMNS) + " |")
    lines.append("|---|" + "---:|" * len(COLUMNS))
    for row in rows:
        name = f"*{row.name}* (published)" if row.published else row.name
        cells = [cell(row.metrics.get(key)) for key, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- {n}" for n in notes], "", "![precision-recall curves](pr_curve.png)", ""]
    return "\n".join([*lines, *sections])


def pr_curve_png(path: Path, title: str, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    for row in rows:
        if row.labels is None or row.scores is None or row.labels.sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(row.labels, row.scores)
        ap = row.metrics.get("average_precision", float("nan"))
        ax.plot(recall, precision, label=f"{row.name} (AP {ap:.3f})", linewidth=1.4)
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(
    out_dir: Path,
    *,
    title: str,
    rows: list[Row],
    notes: list[str] | None = None,
    context: dict[str, Any] | None = None,
    sections: list[str] | None = None,
) -> dict[str, Path]:
    """Write the three files; ``sections`` are extra Markdown appended to ``report.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = notes or []
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "pr_curve": out_dir / "pr_curve.png",
    }
    document = {
        "title": title,
        "rows": [
            {"name": r.name, "published": r.published, "metrics": r.metrics, **r.extra}
            for r in rows
        ],
        "notes": notes,
        **(context or {}),
    }
    paths["json"].write_text(json.dumps(document, indent=2, default=str) + "\n")
    paths["markdown"].write_text(markdown(title, rows, notes, sections or []))
    pr_curve_png(paths["pr_curve"], title, rows)
    return paths
