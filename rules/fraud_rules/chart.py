"""A backtest as a picture: per rule, its alerts split into fraud caught and false positives."""

from __future__ import annotations

from pathlib import Path

from fraud_rules.backtest import Report


def draw(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(r.name, r.figures) for r in report.rules]
    rows += [("model", report.model), ("all alerts", report.overall)]
    names = [name for name, _ in rows][::-1]
    caught = [f.fraud_caught for _, f in rows][::-1]
    false = [f.alerts - f.fraud_caught for _, f in rows][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    ax.barh(names, caught, color="#c0392b", label="fraud caught")
    ax.barh(names, false, left=caught, color="#95a5a6", label="false positives")
    for y, (_, f) in enumerate(rows[::-1]):
        if f.precision is not None:
            ax.text(f.alerts, y, f"  {f.precision:.0%} precise", va="center", fontsize=8)
    ax.set_xlabel("alerts")
    title = f"rules {report.rules_version}: {report.rows:,} transactions, {report.frauds:,} fraud"
    if report.against is not None:
        d = report.against
        title += (
            f"\nagainst the current rules: {d.new_catches} more caught, {d.lost_catches} lost, "
            f"+{d.extra_false_positives} false positives"
        )
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
