"""The synthetic generator: seeded, ordered, and each scenario looking like what it claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fraud_scorer.geo import COUNTRY_CENTROIDS
from fraud_training.synth import (
    COLUMNS,
    FAR_COUNTRIES,
    FRAUD_SCENARIOS,
    HOME_COUNTRIES,
    SHELL_MERCHANTS,
    SynthConfig,
    generate,
)

CFG = SynthConfig(users=6000, days=7.0, seed=4, fraud_users_share=0.05)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate(CFG)


def test_same_config_same_frame_and_seed_matters() -> None:
    small = SynthConfig(users=300, days=2.0, seed=1)
    pd.testing.assert_frame_equal(generate(small), generate(small))
    other = generate(SynthConfig(users=300, days=2.0, seed=2))
    assert not generate(small)["amount"].equals(other["amount"])


def test_rows_are_time_ordered_unique_and_complete(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == COLUMNS
    assert frame["timestamp"].is_monotonic_increasing
    assert frame["transaction_id"].is_unique
    assert not frame.drop(columns=["lat", "lon"]).isna().any().any()
    assert frame["timestamp"].min() >= pd.Timestamp(CFG.start)
    assert frame["timestamp"].max() < pd.Timestamp(CFG.start) + pd.Timedelta(days=CFG.days)
    assert (frame["amount"] > 0).all()
    assert set(frame["label"].unique()) == {0, 1}
    assert ((frame["label"] == 1) == (frame["scenario"] != "genuine")).all()


def test_scenario_rates_follow_the_config(frame: pd.DataFrame) -> None:
    fraud = frame[frame["label"] == 1]
    assert set(fraud["scenario"].unique()) == set(FRAUD_SCENARIOS)
    # Per-user scenarios: about fraud_users_share of users are victims (binomial, 5 sigma).
    victims = fraud.loc[
        fraud["scenario"].isin(["account_takeover", "card_testing", "high_value"]), "user_id"
    ].nunique()
    expected = CFG.users * CFG.fraud_users_share
    assert abs(victims - expected) < 5 * np.sqrt(expected)
    # Friendly fraud: a share of genuine-looking payments is disputed.
    share = (frame["scenario"] == "friendly_fraud").sum() / len(frame)
    assert share == pytest.approx(CFG.friendly_fraud_share, rel=0.5)
    # Volume: tx_per_user_per_day on average (log-normal rates have mean exp(sigma^2 / 2)).
    genuine = (frame["scenario"].isin(["genuine", "friendly_fraud"])).sum()
    assert genuine / (CFG.users * CFG.days) == pytest.approx(
        CFG.tx_per_user_per_day * np.exp(0.5**2 / 2), rel=0.1
    )


def test_daily_and_weekly_rhythm(frame: pd.DataFrame) -> None:
    genuine = frame[frame["scenario"] == "genuine"]
    hours = genuine["timestamp"].dt.hour.value_counts(normalize=True)
    assert hours[18] > 10 * hours[3]
    per_day = genuine["timestamp"].dt.day_of_week.value_counts()
    assert per_day[5] > 1.25 * per_day[0]  # Saturdays are busier than Mondays


def test_account_takeover_is_new_device_far_away_and_expensive(frame: pd.DataFrame) -> None:
    ato = frame[frame["scenario"] == "account_takeover"]
    genuine = frame[frame["scenario"] == "genuine"]
    known_devices = set(genuine["device_id"])
    assert not set(ato["device_id"]) & known_devices
    assert ato["location"].isin(FAR_COUNTRIES).all()
    assert ato["channel"].isin(["online", "app"]).all()
    assert ato["amount"].median() > 3 * genuine["amount"].median()


def test_card_testing_is_a_burst_of_tiny_payments(frame: pd.DataFrame) -> None:
    ct = frame[frame["scenario"] == "card_testing"]
    tiny = ct[ct["merchant_category"] == "online_services"]
    assert tiny["amount"].between(0.5, 3.0).all()
    bursts = ct.groupby("user_id")["timestamp"].agg(["count", "min", "max"])
    assert bursts["count"].between(5, 20).all()
    assert (tiny.groupby("user_id").size() >= 4).all()  # the last may be a cash-out
    assert ((bursts["max"] - bursts["min"]) < pd.Timedelta(minutes=35)).all()


def test_compromised_merchants_and_shell_merchants(frame: pd.DataFrame) -> None:
    cm = frame[frame["scenario"] == "compromised_merchant"]
    assert len(cm) > 0
    assert cm["location"].isin(HOME_COUNTRIES).all()
    genuine_merchants = set(frame.loc[frame["scenario"] == "genuine", "merchant"])
    terminals = cm[~cm["merchant"].isin(SHELL_MERCHANTS)]
    assert set(terminals["merchant"]) <= genuine_merchants  # real merchants, compromised
    assert terminals["device_id"].str.startswith("term-").all()  # cloned card at the terminal
    assert frame.loc[frame["merchant"].isin(SHELL_MERCHANTS), "label"].eq(1).all()


def test_friendly_fraud_looks_genuine(frame: pd.DataFrame) -> None:
    ff = frame[frame["scenario"] == "friendly_fraud"]
    genuine = frame[frame["scenario"] == "genuine"]
    assert 0.5 < ff["amount"].median() / genuine["amount"].median() < 2.0
    assert ff["device_id"].isin(set(genuine["device_id"])).mean() > 0.9  # the owner's devices
    assert ff["location"].isin(HOME_COUNTRIES).mean() > 0.9


def test_places_are_near_their_country(frame: pd.DataFrame) -> None:
    pos = frame[frame["channel"] == "pos"].head(5000)
    centroid = np.array([COUNTRY_CENTROIDS[c] for c in pos["location"]])
    assert np.abs(pos["lat"].to_numpy() - centroid[:, 0]).max() < 8
