"""Evaluation metrics against cases small enough to compute by hand."""

from __future__ import annotations

import numpy as np
import pytest
from fraud_training.metrics import (
    card_precision_at_k,
    evaluate,
    recall_at_fpr,
    threshold_for_alert_rate,
    threshold_for_fpr,
)


def test_card_precision_ranks_cards_by_their_best_daily_score() -> None:
    # Day 0: card a has two payments (max score 0.9, one fraud), b 0.8 genuine, c 0.7 fraud.
    day = np.array([0, 0, 0, 0])
    card = np.array(["a", "a", "b", "c"])
    y = np.array([0, 1, 0, 1])
    s = np.array([0.9, 0.1, 0.8, 0.7])
    assert card_precision_at_k(day, card, y, s, k=1) == 1.0  # a
    assert card_precision_at_k(day, card, y, s, k=2) == 0.5  # a, b
    assert card_precision_at_k(day, card, y, s, k=3) == pytest.approx(2 / 3)  # a, b, c
    assert card_precision_at_k(day, card, y, s, k=4) == 0.5  # capacity 4, two found


def test_card_precision_blocks_cards_found_on_earlier_days() -> None:
    # Day 0: a is top and compromised -> found, blocked. Day 1: a would be top again, but it is
    # blocked, so b (genuine) is the day's top card.
    day = np.array([0, 0, 1, 1])
    card = np.array(["a", "b", "a", "b"])
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.2, 0.9, 0.3])
    assert card_precision_at_k(day, card, y, s, k=1) == pytest.approx((1.0 + 0.0) / 2)


def test_alert_rate_threshold() -> None:
    s = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.4, 0.6, 0.8, 0.0])
    t = threshold_for_alert_rate(s, 0.2)
    assert t == 0.8
    assert (s >= t).mean() == 0.2
    assert threshold_for_alert_rate(s, 0.01) == 0.9  # at least one alert
    with pytest.raises(ValueError, match="alert rate"):
        threshold_for_alert_rate(s, 0.0)


def test_fpr_threshold_and_recall() -> None:
    # 10 genuine scores 0.0..0.9, frauds at 0.85, 0.95 and 0.5.
    y = np.array([0] * 10 + [1, 1, 1])
    s = np.array([i / 10 for i in range(10)] + [0.85, 0.95, 0.5])
    t = threshold_for_fpr(y, s, 0.1)  # one genuine (0.9) may alert
    assert 0.8 < t <= 0.9
    assert ((s >= t) & (y == 0)).sum() == 1
    assert recall_at_fpr(y, s, 0.1) == pytest.approx(2 / 3)  # 0.85 and 0.95, not 0.5
    assert recall_at_fpr(y, s, 0.0) == pytest.approx(1 / 3)  # only 0.95 beats every genuine


def test_evaluate_reports_every_metric() -> None:
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    out = evaluate(y, s, day=np.zeros(5), card=np.arange(5), threshold=0.65, k=2)
    assert out["roc_auc"] == 1.0
    assert out["average_precision"] == 1.0
    assert out["alert_rate"] == 0.4
    assert out["precision_at_threshold"] == 1.0
    assert out["recall_at_threshold"] == 1.0
    assert out["fpr_at_threshold"] == 0.0
    assert out["card_precision_at_2"] == 1.0
    assert out["fraud_rate"] == 0.4
