from __future__ import annotations

import math
from datetime import UTC, datetime

import msgspec
import pandas as pd
import pytest
from fraud_scorer.contract import Transaction, TransactionDecoder
from fraud_scorer.features import FEATURE_INDEX, FEATURE_NAMES, FeatureEngine, as_mapping
from fraud_training.data import to_payloads

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp()


def tx(
    offset_s: float,
    amount: float = 10.0,
    *,
    user: str = "u1",
    country: str = "DE",
    device: str = "d1",
    category: str = "grocery",
    channel: str = "pos",
) -> Transaction:
    return Transaction(
        transaction_id=f"t{offset_s}",
        user_id=user,
        amount=amount,
        currency="EUR",
        timestamp=datetime.fromtimestamp(T0 + offset_s, UTC),
        merchant="m",
        merchant_category=category,
        channel=channel,
        location=country,
        device_id=device,
    )


def run(engine: FeatureEngine, *txs: Transaction) -> list[dict[str, float]]:
    return [as_mapping(engine.compute(0, t, t.timestamp.timestamp())) for t in txs]


def test_first_transaction_has_neutral_history_features() -> None:
    (f,) = run(FeatureEngine(history_hours=24), tx(0, 42.0, channel="online"))
    assert f["amount"] == 42.0
    assert f["hour_of_day"] == 12
    assert f["card_not_present"] == 1.0
    assert f["history_count"] == 0 and f["tx_count_1h"] == 0
    assert f["seconds_since_last"] == 24 * 3600
    assert f["device_seen_before"] == 0.0 and f["merchant_category_new"] == 1.0
    assert f["amount_zscore"] == 0.0 and f["amount_to_mean"] == 1.0


def test_counts_windows_zscore_and_novelty() -> None:
    e = FeatureEngine()
    feats = run(
        e,
        tx(0, 10.0),
        tx(1800, 20.0),
        tx(7200, 30.0),
        tx(7260, 300.0, device="d2", category="electronics"),
    )
    last = feats[-1]
    assert last["history_count"] == 3
    assert last["tx_count_1h"] == 1  # only the event 60 s earlier; 1800 s is 5460 s before
    assert last["tx_count_24h"] == 3
    assert last["amount_sum_24h"] == pytest.approx(60.0)
    assert last["seconds_since_last"] == 60.0
    mean, std = 20.0, math.sqrt(200.0 / 3.0)
    assert last["amount_zscore"] == pytest.approx((300.0 - mean) / std)
    assert last["amount_to_mean"] == pytest.approx(15.0)
    assert last["device_seen_before"] == 0.0 and last["merchant_category_new"] == 1.0
    assert feats[1]["device_seen_before"] == 1.0 and feats[1]["merchant_category_new"] == 0.0


def test_location_change_and_travel_speed() -> None:
    e = FeatureEngine()
    _, paris, us = run(
        e, tx(0, country="DE"), tx(3600, country="FR"), tx(3600 + 1800, country="US")
    )
    assert paris["location_changed"] == 1.0
    assert 300 < paris["travel_speed_kmh"] < 900  # DE->FR centroids in one hour
    assert us["travel_speed_kmh"] > 10_000  # across the Atlantic in 30 minutes


def test_history_horizon_and_event_cap_bound_state() -> None:
    e = FeatureEngine(history_hours=1, max_events_per_user=3)
    feats = run(e, *[tx(i * 60.0) for i in range(10)], tx(10 * 60.0 + 7200))
    assert feats[9]["history_count"] == 3
    assert feats[-1]["history_count"] == 0  # everything older than the horizon is gone
    assert e.user_count() == 1


def test_idle_users_expire_and_partitions_drop() -> None:
    e = FeatureEngine(history_hours=1)
    run(e, tx(0, user="old"), tx(4 * 3600, user="new"))
    assert e.expire_idle() == 1 and e.user_count() == 1
    e.drop_partition(0)
    assert e.user_count() == 0


def _rows(payloads: list[bytes], engine: FeatureEngine) -> list[list[float]]:
    decoder = TransactionDecoder(1 << 16)
    out = []
    for raw in payloads:
        t = decoder.decode(raw)
        assert isinstance(t, Transaction)
        out.append(engine.compute(0, t, t.timestamp.timestamp()))
    return out


def test_replaying_the_horizon_reproduces_features_exactly(
    small_stream: pd.DataFrame,
) -> None:
    """The property state rebuild relies on: a consumer that starts from any point and first
    replays (at least) one horizon of history computes bit-identical features afterwards."""
    horizon_h = 12.0
    payloads = to_payloads(small_stream)
    reference = _rows(payloads, FeatureEngine(horizon_h))
    times = [t.timestamp() for t in small_stream["timestamp"]]
    for cut in (len(payloads) // 3, len(payloads) // 2, 2 * len(payloads) // 3):
        start = next(i for i, t in enumerate(times) if t > times[cut] - horizon_h * 3600 - 3600)
        restarted = FeatureEngine(horizon_h)
        _rows(payloads[start:cut], restarted)  # the replay
        assert _rows(payloads[cut:], restarted) == reference[cut:]


def test_feature_names_are_unique_and_indexed() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert [FEATURE_INDEX[n] for n in FEATURE_NAMES] == list(range(len(FEATURE_NAMES)))
    assert msgspec.json.encode(as_mapping([0.0] * len(FEATURE_NAMES)))
