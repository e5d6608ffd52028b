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
        "blocks": 0.0,
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


def test_a_candidate_that_blocks_everyone_fails_on_block_share_first() -> None:
    """``tx.amount > 0.0`` with action block: the guard names it before the alert rate."""
    everything = sample(alerts=2000.0, blocks=2000.0, rule_hits={"big": 2000.0})
    result = analyse(POLICY, everything, sample(blocks=2.0, rule_hits={"big": 20.0}), {"big"})
    assert (result.verdict, result.reason) == ("fail", "BlockShareTooHigh")
    assert result.values()["block_share"] == pytest.approx(1.0)
    assert result.rules["big"] == {"candidate": 1.0, "stable": 0.01}
    # At the limit it passes (5% by default), and no block series at all is no data.
    assert analyse(POLICY, sample(blocks=100.0), sample()).verdict == "pass"
    assert analyse(POLICY, sample(blocks=None), sample()).reason == "NoData"


@pytest.mark.parametrize(
    ("cand_hits", "stable_hits", "shared", "reason", "ratio"),
    [
        ({"big": 20.0}, {"big": 20.0}, {"big"}, "Healthy", 1.0),
        ({"big": 70.0}, {"big": 20.0}, {"big"}, "RuleHitRateTooHigh", 3.5),  # edited to catch more
        # A rule that never fired on stable is floored at one hit per window.
        ({"big": 30.0}, {}, {"big"}, "RuleHitRateTooHigh", 30.0),
        ({"big": 9.0}, {}, {"big"}, "Healthy", None),  # too few hits to judge
        ({"new": 500.0}, {}, set(), "Healthy", None),  # new rules: alert rate and block share
    ],
)
def test_rule_hit_rates_against_the_same_rule_on_stable(
    cand_hits: dict[str, float],
    stable_hits: dict[str, float],
    shared: set[str],
    reason: str,
    ratio: float | None,
) -> None:
    result = analyse(POLICY, sample(rule_hits=cand_hits), sample(rule_hits=stable_hits), shared)
    assert result.reason == reason
    value = result.values()["rule_hit_rate_ratio"]
    assert value == (pytest.approx(ratio) if ratio is not None else None)
    if reason == "RuleHitRateTooHigh":
        assert "rule big" in result.message
