"""Canary analysis for real: a stable and a canary scorer process consuming the mock Kafka
cluster, scraped by a real Prometheus; the operator's analysis and rollout state machine
driven by what Prometheus measures, and canary weights applied to the running scorers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from fraud_devtools.mock_cluster import MockCluster
from fraud_operator.analysis import analyse
from fraud_operator.prometheus import Prometheus, track_sample
from fraud_operator.rollout import Release, State, analysis_due, step
from fraud_operator.spec import ModelRef, Rollout
from fraud_training.data import to_payloads
from fraud_training.synth import SynthConfig, generate

from tests.integration.harness import TOPICS, ScorerProcess, steady_traffic, wait_until
from tests.servers import prometheus_server

pytestmark = pytest.mark.integration
OLD = Release(ModelRef(version="m1", uri="file:///m1", digest="sha256:" + "1" * 64))
NEW = Release(ModelRef(version="m2", uri="file:///m2", digest="sha256:" + "2" * 64))
POLICY = Rollout.model_validate(
    {
        "steps": [{"weight": 10, "pause": "4s"}, {"weight": 40, "pause": "4s"}],
        "analysis": {
            "interval": "2s",
            "minSamples": 150,
            "failureLimit": 2,
            "maxP99LatencySeconds": 1.0,
        },
    }
)


@pytest.fixture(scope="module")
def traffic() -> list[tuple[bytes, bytes]]:
    frame: pd.DataFrame = generate(SynthConfig(users=4000, days=3.0, seed=31))
    keys = [u.encode() for u in frame["user_id"]]
    return list(zip(keys, to_payloads(frame), strict=True))


@pytest.fixture
def feeding(cluster: MockCluster, traffic: list[tuple[bytes, bytes]]) -> Iterator[None]:
    """Produce transactions at ~1,500/s for as long as the test runs."""
    with steady_traffic(cluster.bootstrap_servers, TOPICS["input"], traffic):
        yield


def tracks(
    tmp_path: Path, cluster: MockCluster, model_dir: Path, canary_review_at: float | None
) -> tuple[ScorerProcess, ScorerProcess | None]:
    stable = ScorerProcess(
        tmp_path,
        cluster.bootstrap_servers,
        model_dir,
        name="stable",
        group="g-stable",
        track="stable",
        slice={"start": 0, "end": 100},
    )
    canary = None
    if canary_review_at is not None:
        canary = ScorerProcess(
            tmp_path,
            cluster.bootstrap_servers,
            model_dir,
            name="canary",
            group="g-canary",
            track="canary",
            slice={"start": 0, "end": 0},
            output={"dead_letters": False},
            decision={"review_at": canary_review_at, "block_at": 0.99},
        )
    return stable, canary


def apply_weight(stable: ScorerProcess, canary: ScorerProcess | None, weight: int) -> None:
    """What the operator does through the tracks' ConfigMaps: move the slice boundary."""
    stable.config["slice"] = {"start": weight, "end": 100}
    stable.write_config()
    if canary is not None:
        canary.config["slice"] = {"start": 0, "end": weight}
        canary.write_config()


def drive(
    prom: Prometheus, stable: ScorerProcess, canary: ScorerProcess | None, deadline_s: float
) -> State:
    """The operator's loop: analyse when due, step the state machine, apply the weight."""
    state = State(phase="Preflight", stable=OLD, candidate=NEW, since=datetime.now(UTC))
    weight = -1
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and state.phase not in ("Stable", "RolledBack"):
        now = datetime.now(UTC)
        result = None
        if analysis_due(state, POLICY, now):
            cand = track_sample(prom, detector="it", track="canary", window="5s")
            base = track_sample(prom, detector="it", track="stable", window="5s")
            result = analyse(POLICY.analysis, cand, base)
        state, _ = step(state, NEW, POLICY, now, preflight="ok", analysis=result)
        if state.weight != weight and state.phase == "Canary":
            weight = state.weight
            apply_weight(stable, canary, weight)
        time.sleep(0.5)
    return state


def run_rollout(
    tmp_path: Path, cluster: MockCluster, model_dir: Path, canary_review_at: float
) -> tuple[State, ScorerProcess]:
    """Both tracks running and scraped, traffic flowing; the rollout driven to its end."""
    stable, canary = tracks(tmp_path, cluster, model_dir, canary_review_at=canary_review_at)
    assert canary is not None
    with prometheus_server([f"127.0.0.1:{stable.port}", f"127.0.0.1:{canary.port}"]) as url:
        stable.start()
        canary.start()
        wait_until(lambda: stable.metric("fraud_transactions_total") > 500, 60, "traffic")
        # Both tracks past the backlog produced before they started: catching up would look
        # like latency (measured from the record's timestamp) and fail the wrong check.
        wait_until(lambda: caught_up(stable) and caught_up(canary), 90, "both tracks caught up")
        return drive(Prometheus(url), stable, canary, deadline_s=90), canary


def caught_up(scorer: ScorerProcess) -> bool:
    reported = "fraud_consumer_lag{" in scorer.get("/metrics")[1]
    # Committed offsets trail by the commit interval (1 s, ~1,500 messages at this rate).
    return reported and scorer.metric("fraud_consumer_lag") < 3000


def test_healthy_candidate_is_promoted(
    tmp_path: Path, cluster: MockCluster, model_dir: Path, feeding: None
) -> None:
    state, canary = run_rollout(tmp_path, cluster, model_dir, canary_review_at=0.9)
    assert (state.phase, state.stable) == ("Stable", NEW), state.message
    assert state.last_analysis["verdict"] == "pass"
    assert state.last_analysis["values"]["samples"] >= POLICY.analysis.min_samples
    # The canary really decided for its slice, and only for it.
    assert canary.metric("fraud_transactions_total") > 0
    assert canary.metric("fraud_other_track_transactions_total") > 0
    assert canary.metric("fraud_dead_letters_total") == 0


def test_candidate_that_alerts_far_more_is_rolled_back(
    tmp_path: Path, cluster: MockCluster, model_dir: Path, feeding: None
) -> None:
    state, _ = run_rollout(
        tmp_path, cluster, model_dir, canary_review_at=0.0
    )  # reviews every transaction
    assert (state.phase, state.stable, state.reason) == ("RolledBack", OLD, "AlertRateTooHigh"), (
        state.last_analysis
    )
    assert state.last_analysis["values"]["alert_rate_ratio"] > POLICY.analysis.max_alert_rate_ratio
    assert state.rejected == "m2"


def test_candidate_without_metrics_waits_then_fails(
    tmp_path: Path, cluster: MockCluster, model_dir: Path, feeding: None
) -> None:
    stable, _ = tracks(tmp_path, cluster, model_dir, canary_review_at=None)
    with prometheus_server([f"127.0.0.1:{stable.port}"]) as url:
        stable.start()
        wait_until(lambda: stable.metric("fraud_transactions_total") > 500, 60, "traffic")
        started = time.monotonic()
        state = drive(Prometheus(url), stable, None, deadline_s=60)
    assert (state.phase, state.reason) == ("RolledBack", "NoAnalysisData")
    assert time.monotonic() - started > 8  # it waited (hold + patience) before failing
