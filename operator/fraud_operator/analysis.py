"""Canary analysis: an ordered chain of pure checks comparing a candidate track with stable.

Each check returns a :class:`Check` - pass, wait or fail, with a CamelCase reason, a message and
the measured value. The first failure decides; otherwise any wait decides (too few samples, no
data, NaN: *wait, not pass*); only a clean run passes. Measurements come from Prometheus
(:mod:`fraud_operator.prometheus`) as :class:`TrackSample`; nothing here does I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fraud_operator.spec import Analysis

Verdict = Literal["pass", "wait", "fail"]
_EPS = 1e-4


@dataclass(frozen=True)
class TrackSample:
    """One track over the analysis window (increases over the window, not totals)."""

    transactions: float | None
    alerts: float | None
    errors: float | None
    p99_latency_s: float | None
    # Cumulative score histogram over the window: upper bound -> count (``le`` buckets).
    score_buckets: dict[float, float] = field(default_factory=dict)
    lag_growth: float | None = None
    blocks: float | None = None
    rule_hits: dict[str, float] = field(default_factory=dict)  # rule name -> matches


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    reason: str
    message: str
    value: float | None = None


@dataclass(frozen=True)
class Result:
    verdict: Verdict
    reason: str
    message: str
    checks: tuple[Check, ...]
    # Hit rate of each rule on each track: rule -> {"candidate": rate, "stable": rate}.
    rules: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def values(self) -> dict[str, float | None]:
        return {c.name: c.value for c in self.checks}


def _missing(*values: float | None) -> bool:
    return any(v is None or math.isnan(v) for v in values)


def check_samples(p: Analysis, cand: TrackSample, stable: TrackSample) -> Check:
    if _missing(cand.transactions, stable.transactions):
        return Check("samples", "wait", "NoData", "no transaction counts yet for both tracks")
    n = min(cand.transactions or 0.0, stable.transactions or 0.0)
    if n < p.min_samples:
        return Check(
            "samples",
            "wait",
            "NotEnoughSamples",
            f"{n:.0f} of {p.min_samples} transactions needed on each track",
            n,
        )
    return Check("samples", "pass", "EnoughSamples", f"{n:.0f} transactions", n)


def _rate(part: float | None, whole: float | None) -> float:
    return (part or 0.0) / whole if whole else math.nan


def check_block_share(p: Analysis, cand: TrackSample, stable: TrackSample) -> Check:
    """The guard against a candidate that would block everyone (``tx.amount > 0.0`` with
    action ``block``): judged on the candidate alone, so it holds in shadow too."""
    value = _rate(cand.blocks, cand.transactions)
    if _missing(cand.blocks) or math.isnan(value):
        return Check("block_share", "wait", "NoData", "no block counts yet")
    return _against_limit(
        "block_share",
        value,
        p.max_block_share,
        f"candidate blocks {value:.2%} of transactions",
        f"{p.max_block_share:.2%}",
        ("BlockShareTooHigh", "BlockShareOk"),
    )


# Fewer matches than this on the candidate are not judged: a ratio over a handful of hits is
# noise (at the default minSamples of 1,000, ten hits is a 1% hit rate).
MIN_RULE_HITS = 10


def rule_rates(cand: TrackSample, stable: TrackSample) -> dict[str, dict[str, float | None]]:
    """Each rule's hit rate on each track that reported it."""
    names = sorted(set(cand.rule_hits) | set(stable.rule_hits))
    return {
        n: {
            "candidate": _hit_rate(cand, n),
            "stable": _hit_rate(stable, n),
        }
        for n in names
    }


def _hit_rate(sample: TrackSample, rule: str) -> float | None:
    if rule not in sample.rule_hits or not sample.transactions:
        return None
    return sample.rule_hits[rule] / sample.transactions


def check_rule_hits(
    p: Analysis, cand: TrackSample, stable: TrackSample, shared: Collection[str]
) -> Check:
    """Each rule both tracks hold (``shared``, by name: an edited expression or action keeps
    its name) against itself on stable, stable's rate floored at one hit per window as for
    the alert rate. The worst ratio is the value; new rules are left to the alert-rate ratio
    and the block share."""
    if _missing(cand.transactions, stable.transactions) or not stable.transactions:
        return Check("rule_hit_rate_ratio", "wait", "NoData", "no transaction counts yet")
    floor = 1.0 / stable.transactions
    worst: tuple[float, str, float, float] | None = None
    for rule in sorted(shared):
        hits = cand.rule_hits.get(rule, 0.0)
        if hits < MIN_RULE_HITS:
            continue
        cand_rate = _rate(hits, cand.transactions)
        stable_rate = max(_rate(stable.rule_hits.get(rule, 0.0), stable.transactions), floor)
        ratio = cand_rate / stable_rate
        if worst is None or ratio > worst[0]:
            worst = (ratio, rule, cand_rate, stable_rate)
    if worst is None:
        return Check("rule_hit_rate_ratio", "pass", "RuleHitsOk", "no shared rule hit enough")
    ratio, rule, cand_rate, stable_rate = worst
    msg = f"rule {rule} hits {cand_rate:.2%} on the candidate, {stable_rate:.2%} on stable"
    return _against_limit(
        "rule_hit_rate_ratio",
        ratio,
        p.max_rule_hit_rate_ratio,
        f"{msg} ({ratio:.2f}x)",
        f"{p.max_rule_hit_rate_ratio}x",
        ("RuleHitRateTooHigh", "RuleHitsOk"),
    )


def check_alert_rate(p: Analysis, cand: TrackSample, stable: TrackSample) -> Check:
    if _missing(cand.alerts, stable.alerts):
        return Check("alert_rate_ratio", "wait", "NoData", "no alert counts yet")
    cand_rate = _rate(cand.alerts, cand.transactions)
    # A stable track with no alerts would make any candidate alert infinitely worse: floor it
    # at one alert per window.
    stable_rate = max(_rate(stable.alerts, stable.transactions), 1.0 / (stable.transactions or 1))
    ratio = cand_rate / stable_rate
    if math.isnan(ratio):
        return Check("alert_rate_ratio", "wait", "NoData", "alert rate is not defined yet")
    msg = f"candidate alerts on {cand_rate:.2%}, stable on {stable_rate:.2%} ({ratio:.2f}x)"
    if ratio > p.max_alert_rate_ratio:
        return Check(
            "alert_rate_ratio",
            "fail",
            "AlertRateTooHigh",
            f"{msg}, above {p.max_alert_rate_ratio}x",
            ratio,
        )
    return Check("alert_rate_ratio", "pass", "AlertRateOk", msg, ratio)


def psi(cand: dict[float, float], stable: dict[float, float]) -> float:
    """Population stability index between two cumulative histograms with the same bounds."""
    bounds = sorted(set(cand) & set(stable))
    if not bounds:
        return math.nan

    def shares(h: dict[float, float]) -> list[float]:
        counts = [h[b] for b in bounds]
        per_bin = [counts[0]] + [b - a for a, b in itertools.pairwise(counts)]
        total = counts[-1]
        return [max(c, 0.0) / total if total else math.nan for c in per_bin]

    a, b = shares(cand), shares(stable)
    return sum((x - y) * math.log((x + _EPS) / (y + _EPS)) for x, y in zip(a, b, strict=True))


def _against_limit(
    name: str, value: float, limit: float, shown: str, limit_shown: str, reasons: tuple[str, str]
) -> Check:
    """Fail when ``value`` is above ``limit``: ``reasons`` is (failed, passed)."""
    if value > limit:
        return Check(name, "fail", reasons[0], f"{shown} > {limit_shown}", value)
    return Check(name, "pass", reasons[1], shown, value)


def check_score_shift(p: Analysis, cand: TrackSample, stable: TrackSample) -> Check:
    value = psi(cand.score_buckets, stable.score_buckets)
    if math.isnan(value):
        return Check("score_psi", "wait", "NoData", "no score histogram yet")
    return _against_limit(
        "score_psi",
        value,
        p.max_score_psi,
        f"score distribution PSI {value:.3f}",
        f"{p.max_score_psi}",
        ("ScoreDistributionShifted", "ScoreDistributionOk"),
    )


def check_latency(p: Analysis, cand: TrackSample, stable: TrackSample) -> Check:
    if _missing(cand.p99_latency_s):
        return Check("p99_latency_s", "wait", "NoData", "no latency yet")
    value = cand.p99_latency_s or 0.0
    return _against_limit(
        "p99_latency_s",
        value,
        p.max_p99_latency_seconds,
        f"p99 event-to-decision {value * 1000:.1f} ms",
        f"{p.max_p99_latency_seconds * 1000:.0f} ms",
        ("LatencyTooHigh", "LatencyOk"),
    )


def check_errors(p: Analysis, cand: TrackSample, stable: TrackSample) -> Check:
    value = _rate(cand.errors, cand.transactions)
    if math.isnan(value):
        return Check("error_rate", "wait", "NoData", "no error counts yet")
    return _against_limit(
        "error_rate",
        value,
        p.max_error_rate,
        f"errors on {value:.2%} of transactions",
        f"{p.max_error_rate:.2%}",
        ("ErrorRateTooHigh", "ErrorRateOk"),
    )


def check_lag(p: Analysis, cand: TrackSample, stable: TrackSample) -> Check:
    if _missing(cand.lag_growth):
        return Check("lag_growth", "pass", "LagUnknown", "no lag measurement (not judged)")
    value = cand.lag_growth or 0.0
    return _against_limit(
        "lag_growth",
        value,
        p.max_lag_growth,
        f"consumer lag grew by {value:.0f}",
        f"{p.max_lag_growth}",
        ("FallingBehind", "KeepingUp"),
    )


CHAIN: Sequence[Callable[[Analysis, TrackSample, TrackSample], Check]] = (
    check_samples,
    check_block_share,  # first: the guard names a candidate that blocks everyone as such
    check_errors,
    check_latency,
    check_alert_rate,
    check_score_shift,
    check_lag,
)


def analyse(
    policy: Analysis,
    candidate: TrackSample,
    stable: TrackSample,
    shared_rules: Collection[str] = (),
) -> Result:
    """Run the chain, then the per-rule check over ``shared_rules`` (the rule names both
    tracks' rule sets hold). Without enough samples nothing else is judged (it would be
    noise)."""
    rates = rule_rates(candidate, stable)
    first = check_samples(policy, candidate, stable)
    if first.verdict != "pass":
        return Result(first.verdict, first.reason, first.message, (first,), rates)
    checks = (
        first,
        *(c(policy, candidate, stable) for c in CHAIN[1:]),
        check_rule_hits(policy, candidate, stable, shared_rules),
    )
    failed = next((c for c in checks if c.verdict == "fail"), None)
    if failed is not None:
        return Result("fail", failed.reason, failed.message, checks, rates)
    waiting = next((c for c in checks if c.verdict == "wait"), None)
    if waiting is not None:
        return Result("wait", waiting.reason, waiting.message, checks, rates)
    return Result("pass", "Healthy", "; ".join(c.message for c in checks), checks, rates)
