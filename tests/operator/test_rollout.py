"""Every transition of the rollout state machine, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fraud_operator.analysis import Check, Result
from fraud_operator.rollout import Live, Release, State, analysis_due, recover, seconds, step
from fraud_operator.spec import ModelRef, Rollout

T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)
OLD = Release(ModelRef(version="m1", uri="https://m/1/", digest="sha256:" + "1" * 64))
NEW = Release(ModelRef(version="m2", uri="https://m/2/", digest="sha256:" + "2" * 64))
OTHER = Release(ModelRef(version="m3", uri="https://m/3/", digest="sha256:" + "3" * 64))
POLICY = Rollout.model_validate(
    {
        "shadow": {"duration": "10m"},
        "steps": [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "10m"}],
        "analysis": {"interval": "1m", "failureLimit": 2},
    }
)
PASS = Result("pass", "Healthy", "ok", (Check("samples", "pass", "EnoughSamples", "", 5000.0),))
FAIL = Result(
    "fail",
    "AlertRateTooHigh",
    "5x",
    (Check("alert_rate_ratio", "fail", "AlertRateTooHigh", "5x", 5.0),),
)
WAIT = Result("wait", "NotEnoughSamples", "12 of 1000", ())
STABLE = State(phase="Stable", stable=OLD, since=T0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_first_deployment_is_stable_at_once() -> None:
    state, event = step(State(), OLD, POLICY, T0)
    assert (state.phase, state.stable, event and event.reason) == ("Stable", OLD, "Deployed")


def test_happy_path_preflight_shadow_canary_steps_promote() -> None:
    s, e = step(STABLE, NEW, POLICY, at(0))
    assert (s.phase, s.candidate, e and e.reason) == ("Preflight", NEW, "RolloutStarted")
    s, e = step(s, NEW, POLICY, at(1), preflight="pending")
    assert s.phase == "Preflight" and e is None
    s, e = step(s, NEW, POLICY, at(2), preflight="ok")
    assert (s.phase, s.weight, e and e.reason) == ("Shadow", 0, "ShadowStarted")
    s, _ = step(s, NEW, POLICY, at(5), analysis=PASS)
    assert s.phase == "Shadow"  # 10 minutes of shadow first
    s, e = step(s, NEW, POLICY, at(12.5), analysis=PASS)
    assert (s.phase, s.step, s.weight, e and e.reason) == ("Canary", 0, 10, "CanaryStep")
    s, _ = step(s, NEW, POLICY, at(14), analysis=PASS)
    assert s.weight == 10  # 5 minute pause
    s, e = step(s, NEW, POLICY, at(18), analysis=PASS)
    assert (s.step, s.weight) == (1, 50)
    s, e = step(s, NEW, POLICY, at(29), analysis=PASS)
    assert (s.phase, s.stable, s.candidate, s.weight) == ("Stable", NEW, None, 0)
    assert e is not None and e.reason == "Promoted" and not e.warning


def test_waiting_never_advances() -> None:
    s = State(phase="Canary", stable=OLD, candidate=NEW, step=0, weight=10, since=at(0))
    s, e = step(s, NEW, POLICY, at(6), analysis=WAIT)
    assert (s.phase, s.weight, e) == ("Canary", 10, None)
    assert s.last_analysis["reason"] == "NotEnoughSamples"


def test_failures_beyond_the_limit_roll_back() -> None:
    s = State(phase="Canary", stable=OLD, candidate=NEW, step=1, weight=50, since=at(0))
    s, e = step(s, NEW, POLICY, at(1), analysis=FAIL)
    assert (s.phase, s.failures, e and e.reason, e and e.warning) == (
        "Canary",
        1,
        "AnalysisFailed",
        True,
    )
    s, e = step(s, NEW, POLICY, at(2), analysis=FAIL)
    assert (s.phase, s.stable, s.candidate, s.weight) == ("RolledBack", OLD, None, 0)
    assert (s.reason, s.rejected) == ("AlertRateTooHigh", "m2")
    assert e is not None and e.warning and "m2 rolled back" in e.message
    assert s.last_analysis["values"] == {"alert_rate_ratio": 5.0}


def test_no_data_waits_then_fails() -> None:
    s = State(phase="Canary", stable=OLD, candidate=NEW, step=0, weight=10, since=at(0))
    for minute in range(1, 11):  # patience: 5m pause + 2 x 1m x 3
        s, _ = step(s, NEW, POLICY, at(minute), analysis=WAIT)
        assert s.phase == "Canary"
    s, _e = step(s, NEW, POLICY, at(11.5), analysis=WAIT)
    assert (s.phase, s.reason) == ("RolledBack", "NoAnalysisData")


def test_preflight_failure_keeps_stable_untouched() -> None:
    s, _ = step(STABLE, NEW, POLICY, at(0))
    s, e = step(s, NEW, POLICY, at(1), preflight="failed")
    assert (s.phase, s.stable, s.reason) == ("RolledBack", OLD, "ModelPreflightFailed")
    # The same broken version is not retried on its own...
    assert step(s, NEW, POLICY, at(2)) == (s, None)
    # ...a new one is, and going back to stable acknowledges the rollback.
    assert step(s, OTHER, POLICY, at(3))[0].phase == "Preflight"
    back, e = step(s, OLD, POLICY, at(3))
    assert back.phase == "Stable" and e is not None


@pytest.mark.parametrize(
    ("override", "phase", "stable"),
    [("promote", "Stable", NEW), ("abort", "RolledBack", OLD)],
)
def test_manual_overrides(override: str, phase: str, stable: ModelRef) -> None:
    s = State(phase="Canary", stable=OLD, candidate=NEW, step=0, weight=10, since=at(0))
    s, _e = step(s, NEW, POLICY, at(1), override=override)  # type: ignore[arg-type]
    assert (s.phase, s.stable) == (phase, stable)


def test_pause_holds_the_step() -> None:
    paused = POLICY.model_copy(update={"paused": True})
    s = State(phase="Canary", stable=OLD, candidate=NEW, step=0, weight=10, since=at(0))
    s, _e = step(s, NEW, paused, at(30), analysis=PASS)
    assert (s.phase, s.weight, s.reason) == ("Canary", 10, "Paused")


def test_spec_changes_during_a_rollout() -> None:
    s = State(phase="Canary", stable=OLD, candidate=NEW, step=0, weight=10, since=at(0))
    restarted, _ = step(s, OTHER, POLICY, at(1))
    assert (restarted.phase, restarted.candidate, restarted.weight) == ("Preflight", OTHER, 0)
    reverted, _e = step(s, OLD, POLICY, at(1))
    assert (reverted.phase, reverted.reason) == ("RolledBack", "Reverted")


def test_without_shadow_or_steps() -> None:
    only_steps = Rollout.model_validate({"steps": [{"weight": 25, "pause": "1m"}]})
    s, _ = step(STABLE, NEW, only_steps, at(0))
    s, _ = step(s, NEW, only_steps, at(1), preflight="ok")
    assert (s.phase, s.weight) == ("Canary", 25)
    direct, _ = step(step(STABLE, NEW, None, at(0))[0], NEW, None, at(1), preflight="ok")
    assert (direct.phase, direct.stable) == ("Stable", NEW)


def test_state_round_trips_through_status_and_analysis_is_timed() -> None:
    s = State(
        phase="Canary",
        stable=OLD,
        candidate=NEW,
        step=1,
        weight=50,
        since=at(0),
        last_analysis_at=at(3),
        failures=1,
        last_analysis={"verdict": "pass"},
    )
    status = s.to_status()
    assert (status["canaryVersion"], status["canaryWeight"], status["stableVersion"]) == (
        "m2",
        50,
        "m1",
    )
    assert State.from_status(status) == s
    assert not analysis_due(s, POLICY, at(3.5)) and analysis_due(s, POLICY, at(4))
    assert seconds("90s") == 90 and seconds("2h") == 7200


def test_operator_side_helpers() -> None:
    from fraud_operator.reconcile import merge_rollout, overrides, plans_for
    from fraud_operator.status import build_status

    assert overrides({"frauddetection.io/promote": "true"}) == "promote"
    assert (
        overrides({"frauddetection.io/promote": "true", "frauddetection.io/abort": "TRUE"})
        == "abort"
    )
    assert overrides({"frauddetection.io/promote": "no"}) is None
    canary = State(phase="Canary", stable=OLD, candidate=NEW, weight=30, since=T0)
    plans = plans_for(canary)
    assert [(p.track, p.model_of, p.start, p.end) for p in plans] == [
        ("stable", plans[0].model_of, 30, 100),
        ("canary", plans[1].model_of, 0, 30),
    ]
    assert (plans[0].model, plans[1].model) == (OLD.model, NEW.model)
    shadow = plans_for(State(phase="Shadow", stable=OLD, candidate=NEW, since=T0))
    assert [(p.track, p.start, p.end) for p in shadow] == [("stable", 0, 100), ("shadow", 0, 100)]
    assert [p.track for p in plans_for(STABLE)] == ["stable"]

    base = build_status(
        generation=1,
        problems=[],
        deployment=None,
        model_version="m1",
        rules_version=None,
        previous=[],
        now="T",
    )
    merged = merge_rollout(base, canary, "", [])
    assert (merged["phase"], merged["canaryWeight"], merged["canaryVersion"]) == (
        "Canary",
        30,
        "m2",
    )
    failed = State(
        phase="RolledBack",
        stable=OLD,
        since=T0,
        reason="ModelPreflightFailed",
        message="m2 rolled back: the candidate model failed its preflight",
    )
    merged = merge_rollout(base, failed, "", [])
    ready = {c["type"]: c for c in merged["conditions"]}["ModelReady"]
    assert (ready["status"], ready["reason"]) == ("False", "ModelPreflightFailed")
    assert merge_rollout(base, STABLE, "", [])["phase"] == base["phase"]


# -- the status is not the truth about traffic: recover() reads the live Deployments ----------

CANARY = State(phase="Canary", stable=OLD, candidate=NEW, step=1, weight=50, since=at(0))


def test_a_status_lost_mid_canary_resumes_the_canary_not_a_promotion() -> None:
    """Restored without status (State()), the detector used to make its candidate stable with
    no preflight and no canary. From the live Deployments it resumes at the running weight."""
    live = Live(stable=OLD, canary=NEW, canary_weight=50)
    blind, _ = step(State(), NEW, POLICY, at(30))
    assert blind.stable == NEW  # what the status alone would have done
    s = recover(State(), live, POLICY, at(30))
    assert (s.phase, s.stable, s.candidate, s.step, s.weight) == ("Canary", OLD, NEW, 1, 50)
    assert s.reason == "Recovered" and s.since == at(30)  # the step's timer starts over
    s, e = step(s, NEW, POLICY, at(31), analysis=PASS)
    assert (s.phase, s.stable, e) == ("Canary", OLD, None)  # still judged, not promoted
    s, e = step(s, NEW, POLICY, at(41), analysis=PASS)
    assert (s.phase, s.stable, e and e.reason) == ("Stable", NEW, "Promoted")


def test_a_status_lost_mid_shadow_or_preflight() -> None:
    s = recover(State(), Live(stable=OLD, shadow=NEW), POLICY, at(5))
    assert (s.phase, s.stable, s.candidate, s.weight) == ("Shadow", OLD, NEW, 0)
    # During preflight nothing of the candidate runs: the rollout starts over, preflight first.
    s = recover(State(), Live(stable=OLD), POLICY, at(5))
    assert (s.phase, s.stable) == ("Stable", OLD)
    s, e = step(s, NEW, POLICY, at(5))
    assert (s.phase, e and e.reason) == ("Preflight", "RolloutStarted")


def test_a_stale_status_is_corrected_by_what_runs() -> None:
    # The status claims 50% but 10% runs: the weight (and step) are what runs.
    s = recover(CANARY, Live(stable=OLD, canary=NEW, canary_weight=10), POLICY, at(1))
    assert (s.phase, s.step, s.weight, s.since) == ("Canary", 0, 10, at(0))
    # The status claims a canary that runs nowhere: checked again before it gets traffic.
    s = recover(CANARY, Live(stable=OLD), POLICY, at(1))
    assert (s.phase, s.candidate, s.weight, s.reason) == ("Preflight", NEW, 0, "Recovered")
    # The promotion happened but its status was lost.
    s = recover(CANARY, Live(stable=NEW), POLICY, at(1))
    assert (s.phase, s.stable, s.candidate) == ("Stable", NEW, None)
    # An old status naming another stable model.
    s = recover(STABLE, Live(stable=OTHER), POLICY, at(1))
    assert (s.phase, s.stable) == ("Stable", OTHER)


def test_agreeing_or_leftover_tracks_change_nothing() -> None:
    assert recover(CANARY, Live(stable=OLD, canary=NEW, canary_weight=50), POLICY, at(1)) is CANARY
    assert recover(STABLE, Live(stable=OLD), POLICY, at(1)) is STABLE
    assert recover(STABLE, Live(), POLICY, at(1)) is STABLE  # nothing deployed yet
    # A track this pass prunes (the candidate was replaced, or rolled back) is not resumed.
    preflight = State(phase="Preflight", stable=OLD, candidate=OTHER, since=at(0))
    assert recover(preflight, Live(stable=OLD, canary=NEW, canary_weight=10), POLICY, at(1)) == (
        preflight
    )
    rolled = State(phase="RolledBack", stable=OLD, rejected="m2", since=at(0))
    assert recover(rolled, Live(stable=OLD, canary=NEW, canary_weight=10), POLICY, at(1)) == rolled


def test_a_status_from_an_older_operator_reads_as_unknown() -> None:
    old = {"rollout": {"phase": "Stable", "stable": {"version": "m1", "uri": "u", "sha256": "1"}}}
    assert State.from_status(old).stable is None


# -- rules roll out like models: a release is a model and a rule set's version -----------------

R1 = Release(OLD.model, "r1")
R2 = Release(OLD.model, "r2")  # the same model, other rules
STAGED = State(phase="Stable", stable=R1, since=T0)
BLOCKS_ALL = Result(
    "fail",
    "BlockShareTooHigh",
    "candidate blocks 100.00% of transactions > 5.00%",
    (Check("block_share", "fail", "BlockShareTooHigh", "", 1.0),),
)


def test_a_rules_change_goes_through_shadow_and_a_blocking_one_is_rolled_back() -> None:
    s, e = step(STAGED, R2, POLICY, at(0))
    assert (s.phase, s.candidate, e and e.message) == (
        "Preflight",
        R2,
        "rolling out rules r2 over rules r1",
    )
    s, e = step(s, R2, POLICY, at(0.1), preflight="ok")
    assert (s.phase, e and e.message) == ("Shadow", "shadowing rules r2")
    s, e = step(s, R2, POLICY, at(1), analysis=BLOCKS_ALL)
    assert (s.phase, s.failures, e and e.reason) == ("Shadow", 1, "AnalysisFailed")
    s, e = step(s, R2, POLICY, at(2), analysis=BLOCKS_ALL)
    assert (s.phase, s.stable, s.candidate) == ("RolledBack", R1, None)
    assert e is not None and e.warning and e.message.startswith("rules r2 rolled back")
    # Still in the spec: not retried by itself; other rules are a new rollout.
    assert step(s, R2, POLICY, at(3)) == (s, None)
    assert step(s, Release(OLD.model, "r3"), POLICY, at(3))[0].phase == "Preflight"


def test_a_promotion_is_refused_while_the_candidate_blocks_too_much() -> None:
    shadow = State(phase="Shadow", stable=R1, candidate=R2, since=at(0))
    s, _ = step(shadow, R2, POLICY, at(1), analysis=BLOCKS_ALL)
    s, e = step(s, R2, POLICY, at(1.5), override="promote")
    assert (s.phase, s.stable, e and e.reason, e and e.warning) == (
        "Shadow",
        R1,
        "PromotionRefused",
        True,
    )
    assert e is not None and "100.0%" in e.message
    s, e = step(s, R2, POLICY, at(1.6), override="abort")  # abort always works
    assert s.phase == "RolledBack"
    healthy, _ = step(shadow, R2, POLICY, at(1), analysis=PASS)  # no block share measured
    assert step(healthy, R2, POLICY, at(2), override="promote")[0].stable == R2


def test_model_and_rules_together_are_one_release_named_by_what_differs() -> None:
    both = Release(NEW.model, "r2")
    _, e = step(STAGED, both, POLICY, at(0))
    assert e is not None and e.message == (
        "rolling out model m2 with rules r2 over model m1 with rules r1"
    )
    assert Release(NEW.model, "r1").named(R1) == "model m2"
    assert (both.key, NEW.key) == ("m2+rules-r2", "m2")


def test_rules_in_the_status_round_trip_and_older_statuses_still_read() -> None:
    s = State(phase="Shadow", stable=R1, candidate=R2, since=T0, rejected="m3+rules-r9")
    status = s.to_status()
    assert (status["rollout"]["stableRules"], status["rollout"]["candidateRules"]) == ("r1", "r2")
    assert State.from_status(status) == s
    del status["rollout"]["stableRules"], status["rollout"]["candidateRules"]
    assert State.from_status(status).stable == OLD  # written before rules were staged
    # A version rolled back before rules were staged is still not retried with its rules.
    old = State(phase="RolledBack", stable=R1, since=T0, rejected="m2")
    assert step(old, Release(NEW.model, "r1"), POLICY, at(1)) == (old, None)


def test_immediate_rules_end_a_rules_rollout_and_keep_a_model_one() -> None:
    from fraud_operator.rollout import without_rules

    shadow = State(phase="Shadow", stable=R1, candidate=R2, since=at(0))
    ended = without_rules(shadow, at(1))
    assert (ended.phase, ended.stable, ended.reason) == ("Stable", OLD, "RulesImmediate")
    model = State(phase="Canary", stable=R1, candidate=Release(NEW.model, "r2"), weight=10)
    kept = without_rules(model, at(1))
    assert (kept.phase, kept.stable, kept.candidate, kept.weight) == ("Canary", OLD, NEW, 10)


def test_stable_keeps_its_rules_while_the_candidate_runs_the_specs() -> None:
    from fraud_operator import builders
    from fraud_operator.reconcile import plans_for
    from fraud_operator.spec import Rulebook

    from tests.operator.conftest import make_detector

    d = make_detector()
    old = Rulebook.model_validate(
        {"rules": [{"name": "big", "expression": "tx.amount > 5.0"}], "decision": {}}
    )
    shadow = State(phase="Shadow", stable=R1, candidate=R2, since=T0)
    stable_plan, shadow_plan = plans_for(shadow, old)
    configs = [builders.config_map(d, p) for p in (stable_plan, shadow_plan)]
    books = [builders.running_rulebook(d, c) for c in configs]
    assert books == [("stable", old), ("shadow", Rulebook.of(d.spec))]
    assert books[0] is not None and books[0][1].version != Rulebook.of(d.spec).version
    # Not this detector's, or unreadable: nothing is read back.
    other = builders.Detector("other", "shop", "uid-2", d.spec)
    assert builders.running_rulebook(other, configs[0]) is None
    configs[0]["data"]["scorer.yaml"] = "rules: [{name: 1"
    assert builders.running_rulebook(d, configs[0]) is None
