"""Evaluation metrics for fraud detection, as pure functions of labels and scores.

Alongside threshold-free ranking metrics (ROC AUC, average precision) it has the ones fraud teams
act on: recall at a fixed false-positive rate, the alert rate a threshold produces, and *card
precision@k* (Le Borgne et al.): investigators check k cards a day, so rank each day's cards by
their highest score and count how many of the top k were really compromised.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

Scores = npt.NDArray[np.floating[Any]]
Labels = npt.NDArray[np.integer[Any]]

DEFAULT_FPR: Final = 0.01


def card_precision_at_k(
    day: npt.NDArray[Any], card: npt.NDArray[Any], labels: Labels, scores: Scores, k: int = 100
) -> float:
    """Mean over days of the share of compromised cards among each day's ``k`` top-scored cards.

    A card's daily score is its highest transaction score that day; it is compromised that day
    if any of its transactions that day is fraud. A compromised card found in a day's top ``k``
    is blocked, so it leaves the ranking of the following days (as in the handbook). A day with
    fewer than ``k`` cards still divides by ``k``: the investigators' capacity is what is
    measured.
    """
    if len(labels) == 0:
        return 0.0
    per_card = (
        pd.DataFrame({"day": day, "card": card, "y": labels, "s": scores})
        .groupby(["day", "card"], sort=True)
        .agg(y=("y", "max"), s=("s", "max"))
        .reset_index()
    )
    blocked: set[Any] = set()
    precisions = []
    for _, cards in per_card.groupby("day", sort=True):
        open_cards = cards[~cards["card"].isin(blocked)]
        top = open_cards.sort_values("s", ascending=False, kind="stable").head(k)
        found = top.loc[top["y"] == 1, "card"]
        precisions.append(len(found) / k)
        blocked.update(found)
    return float(np.mean(precisions))


def threshold_for_alert_rate(scores: Scores, rate: float) -> float:
    """The lowest score threshold (``score >= t`` alerts) that alerts on at most ``rate`` of
    rows; rows tied at the threshold all alert, so ties can push the rate above it."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"alert rate must be in (0, 1], got {rate}")
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = max(int(np.floor(rate * len(ordered))), 1)
    return float(ordered[n - 1])


def threshold_for_fpr(labels: Labels, scores: Scores, fpr: float) -> float:
    """The lowest threshold whose false-positive rate (share of genuine rows with
    ``score >= t``) does not exceed ``fpr``."""
    genuine = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels) == 0])[::-1]
    if len(genuine) == 0:
        return float(np.min(scores))
    allowed = int(np.floor(fpr * len(genuine)))  # this many genuine rows may alert
    if allowed >= len(genuine):
        return float(genuine[-1])
    # Strictly above the (allowed+1)-th highest genuine score.
    return float(np.nextafter(genuine[allowed], np.inf))


def recall_at_fpr(labels: Labels, scores: Scores, fpr: float = DEFAULT_FPR) -> float:
    """Share of frauds caught by the threshold of :func:`threshold_for_fpr`."""
    y = np.asarray(labels)
    if y.sum() == 0:
        return 0.0
    t = threshold_for_fpr(y, scores, fpr)
    return float((np.asarray(scores)[y == 1] >= t).mean())


def average_precision(labels: Labels, scores: Scores) -> float:
    """Area under the precision-recall curve (scikit-learn's step-wise definition)."""
    return float(average_precision_score(labels, scores))


def evaluate(
    labels: Labels,
    scores: Scores,
    *,
    day: npt.NDArray[Any],
    card: npt.NDArray[Any],
    threshold: float,
    k: int = 100,
) -> dict[str, float]:
    """All report metrics of one scored test set, at ``threshold`` for the alerting ones."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    both = 0 < y.sum() < len(y)
    alerts = s >= threshold
    tp = int((alerts & (y == 1)).sum())
    return {
        "roc_auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "average_precision": average_precision(y, s) if both else float("nan"),
        "recall_at_1pct_fpr": recall_at_fpr(y, s, DEFAULT_FPR),
        f"card_precision_at_{k}": card_precision_at_k(day, card, y, s, k),
        "threshold": float(threshold),
        "alert_rate": float(alerts.mean()) if len(s) else 0.0,
        "precision_at_threshold": tp / max(int(alerts.sum()), 1),
        "recall_at_threshold": tp / max(int(y.sum()), 1),
        "fpr_at_threshold": float((alerts & (y == 0)).sum() / max(int((y == 0).sum()), 1)),
        "rows": float(len(y)),
        "fraud_rate": float(y.mean()) if len(y) else 0.0,
    }
