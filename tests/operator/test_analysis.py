"""The analysis chain on hand-made samples: pass, wait (never pass) on missing data, fail."""

from __future__ import annotations

import math

import pytest
from fraud_operator.analysis import TrackSample, analyse, psi
from fraud_operator.spec import Analysis

POLICY = Analysis(min_samples=1000)
HIST = {0.1: 800.0, 0.5: 950.0, 0.9: 990.0, math.inf: 1000.0}


def sample(**kw: object) -> TrackSample:
    base: dict[str, object] = {
        "transactions": 2000.0,
        "alerts": 20.0,
        "errors": 0.0,
        "p99_latency_s": 0.02,
        "score_buckets": {k: 2 * v for k, v in HIST.items()},
        "lag_growth": 10.0,
    }
    base.update(kw)
    return TrackSample(**base)  # type: ignore[arg-type]


def test_psi_by_hand() -> None:
    assert psi(HIST, HIST) == pytest.approx(0.0)
    shifted = {0.1: 500.0, 0.5: 900.0, 0.9: 980.0, math.inf: 1000.0}
    # bins: stable (.8,.15,.04,.01) vs candidate (.5,.4,.08,.02)
    expected = sum(
        (c - s) * math.log((c + 1e-4) / (s + 1e-4))
        for c, s in zip((0.5, 0.4, 0.08, 0.02), (0.8, 0.15, 0.04, 0.01), strict=True)
    )
    assert psi(shifted, HIST) == pytest.approx(expected)
    assert math.isnan(psi({}, HIST))


@pytest.mark.parametrize(
    ("candidate", "verdict", "reason"),
    [
        (sample(), "pass", "Healthy"),
        (sample(transactions=500.0), "wait", "NotEnoughSamples"),
        (sample(transactions=None), "wait", "NoData"),
        (sample(transactions=math.nan), "wait", "NoData"),
        (sample(alerts=100.0), "fail", "AlertRateTooHigh"),  # 5x stable's 1%
        (sample(alerts=39.0), "pass", "Healthy"),  # 1.95x: inside 2.0
        (sample(errors=100.0), "fail", "ErrorRateTooHigh"),
        (sample(p99_latency_s=0.2), "fail", "LatencyTooHigh"),
        (sample(p99_latency_s=None), "wait", "NoData"),
        (
            sample(score_buckets={0.1: 200.0, 0.5: 1000.0, 0.9: 1900.0, math.inf: 2000.0}),
            "fail",
            "ScoreDistributionShifted",
        ),
        (sample(score_buckets={}), "wait", "NoData"),
        (sample(lag_growth=50_000.0), "fail", "FallingBehind"),
        (sample(lag_growth=None), "pass", "Healthy"),
    ],
)
def test_chain(candidate: TrackSample, verdict: str, reason: str) -> None:
    result = analyse(POLICY, candidate, sample())
    assert (result.verdict, result.reason) == (verdict, reason)
    assert result.message


def test_first_failure_wins_and_values_are_recorded() -> None:
    result = analyse(POLICY, sample(errors=100.0, alerts=100.0), sample())
    assert result.reason == "ErrorRateTooHigh"  # errors are checked before alert rate
    values = result.values()
    assert values["alert_rate_ratio"] == pytest.approx(5.0)
    assert values["error_rate"] == pytest.approx(0.05)


def test_a_stable_track_without_alerts_does_not_divide_by_zero() -> None:
    result = analyse(POLICY, sample(alerts=1.0), sample(alerts=0.0))
    assert result.verdict == "pass"
    assert analyse(POLICY, sample(alerts=10.0), sample(alerts=0.0)).reason == "AlertRateTooHigh"
