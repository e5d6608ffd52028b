"""The rollout state machine: a pure function from (state, desired release, policy, clock,
preflight, analysis, overrides) to the next state.

A :class:`Release` is what a track runs: a model artifact and, unless ``rollout.rules`` is
``immediate``, the version of its rules and thresholds. A new model, a rule edit or a threshold
change is a new release, and each goes through the same phases:

    Stable --new release--> Preflight --ok--> [Shadow] --> Canary step 1..n --> Promoting --> Stable
                             |                 |               |
                             +--failed-------> RolledBack <----+ (failures >= limit, abort,
                                                                  no data for too long)

The operator keeps :class:`State` in the FraudDetector's status, but the status is not the
truth about traffic: a FraudDetector restored without its status (a backup, a GitOps re-create)
would otherwise make its candidate stable with no preflight and no canary. On every reconcile,
:func:`recover` first corrects the state with what the live Deployments say they run (each is
annotated with its full model reference and its users); only timers and counts come from the
status alone. Then :func:`step` gives the next state, which the operator turns into Deployments
(which track runs which model, the canary weight) and Events. Time is passed in, so every
transition is tested with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from fraud_operator.analysis import Result
from fraud_operator.spec import ModelRef, Rollout

Phase = Literal["Stable", "Preflight", "Shadow", "Canary", "Promoting", "RolledBack"]
Preflight = Literal["pending", "ok", "failed"]
Override = Literal["promote", "abort"] | None


def seconds(duration: str) -> float:
    """``30s`` / ``5m`` / ``1h`` (the CRD's duration pattern) in seconds."""
    unit = {"s": 1, "m": 60, "h": 3600}[duration[-1]]
    return float(duration[:-1]) * unit


@dataclass(frozen=True)
class Release:
    """What a track runs: a model and, when rules are staged, its rule set's version
    (:meth:`fraud_operator.spec.Rulebook.version`; None when rules are not staged)."""

    model: ModelRef
    rules: str | None = None

    @property
    def key(self) -> str:
        """What a rollback remembers, so that the same release is not retried by itself."""
        return self.model.version + (f"+rules-{self.rules}" if self.rules else "")

    def named(self, against: Release | None) -> str:
        """How messages name it, by what differs from ``against``: ``model m2``,
        ``rules 3fa2b1c4d5e6`` or ``model m2 with rules 3fa2b1c4d5e6``."""
        if against is None or self.rules is None or self.rules == against.rules:
            return f"model {self.model.version}"
        if self.model == against.model:
            return f"rules {self.rules}"
        return f"model {self.model.version} with rules {self.rules}"


@dataclass(frozen=True)
class State:
    phase: Phase = "Stable"
    stable: Release | None = None
    candidate: Release | None = None
    step: int = 0  # index of the current canary step
    weight: int = 0  # percent of users on the canary
    since: datetime | None = None  # when the current phase or step began
    last_analysis_at: datetime | None = None
    failures: int = 0
    reason: str = ""
    message: str = ""
    rejected: str | None = None  # the version last rolled back (not retried automatically)
    last_analysis: dict[str, Any] = field(default_factory=dict)

    def to_status(self) -> dict[str, Any]:
        stable, candidate = self.stable, self.candidate
        return {
            "phase": self.phase,
            "stableVersion": stable.model.version if stable else None,
            "canaryVersion": candidate.model.version if candidate else None,
            "canaryWeight": self.weight,
            "rollout": {
                "phase": self.phase,
                "stable": stable.model.model_dump(by_alias=True) if stable else None,
                "candidate": candidate.model.model_dump(by_alias=True) if candidate else None,
                "stableRules": stable.rules if stable else None,
                "candidateRules": candidate.rules if candidate else None,
                "step": self.step,
                "since": self.since.isoformat() if self.since else None,
                "lastAnalysisAt": self.last_analysis_at.isoformat()
                if self.last_analysis_at
                else None,
                "failures": self.failures,
                "reason": self.reason,
                "message": self.message,
                "rejected": self.rejected,
                "lastAnalysis": self.last_analysis,
            },
        }

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> State:
        r = status.get("rollout") or {}

        def release(value: dict[str, Any] | None, rules: str | None) -> Release | None:
            try:
                return Release(ModelRef.model_validate(value), rules) if value else None
            except ValidationError:  # written by an older operator: recover() fills it in
                return None

        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        phase = r.get("phase")
        return cls(
            phase=phase if phase in _PHASES else "Stable",
            stable=release(r.get("stable"), r.get("stableRules")),
            candidate=release(r.get("candidate"), r.get("candidateRules")),
            step=int(r.get("step") or 0),
            weight=int(status.get("canaryWeight") or 0),
            since=when(r.get("since")),
            last_analysis_at=when(r.get("lastAnalysisAt")),
            failures=int(r.get("failures") or 0),
            reason=r.get("reason") or "",
            message=r.get("message") or "",
            rejected=r.get("rejected"),
            last_analysis=r.get("lastAnalysis") or {},
        )


_PHASES = ("Stable", "Preflight", "Shadow", "Canary", "Promoting", "RolledBack")


@dataclass(frozen=True)
class Live:
    """What the scorer tracks run: the model from each Deployment's annotations, the rules from
    its ConfigMap (None: no such track, or one that predates the annotations)."""

    stable: Release | None = None
    canary: Release | None = None
    canary_weight: int = 0
    shadow: Release | None = None


def recover(state: State, live: Live, policy: Rollout | None, now: datetime) -> State:
    """``state`` (from the status) corrected by ``live``: the stable model and the candidate's
    traffic are what runs. The status is believed only where it agrees with the cluster; where
    it has nothing or disagrees, the rollout resumes from what runs with fresh timers, and a
    candidate the status says has traffic but that runs nowhere is preflighted again before it
    gets any."""
    if live.stable is None:  # nothing deployed (yet): the status has no traffic to contradict
        return state
    policy = policy or Rollout()
    running = live.canary or live.shadow
    phase: Phase = "Canary" if live.canary else "Shadow"
    if state.stable != live.stable:
        if state.candidate == live.stable:  # the promotion happened; its record did not
            return State(
                phase="Stable",
                stable=live.stable,
                since=now,
                reason="Recovered",
                message=f"running {live.stable.named(None)} (recovered from the Deployments)",
                rejected=state.rejected,
            )
        state = replace(state, stable=live.stable)
    if running is None or running == live.stable:
        if state.phase in ("Canary", "Shadow") and state.candidate not in (None, live.stable):
            assert state.candidate is not None
            return replace(
                _preflight(state, state.candidate, now),
                reason="Recovered",
                message=f"{state.candidate.named(state.stable)} has no running track: "
                "checking it again",
            )
        return state
    if state.phase in ("Preflight", "RolledBack"):
        return state  # a leftover track: this pass prunes it
    if state.phase == phase and state.candidate == running:
        if phase == "Canary" and state.weight != live.canary_weight:
            return replace(
                state, weight=live.canary_weight, step=_step_of(policy, live.canary_weight)
            )
        return state
    weight = live.canary_weight if phase == "Canary" else 0
    return State(
        phase=phase,
        stable=live.stable,
        candidate=running,
        step=_step_of(policy, weight),
        weight=weight,
        since=now,
        reason="Recovered",
        message=f"rollout of {running.named(live.stable)} resumed from the running Deployments "
        f"({weight}% of users): the status had lost it",
        rejected=state.rejected,
    )


def _step_of(policy: Rollout, weight: int) -> int:
    """The canary step a weight belongs to: the last whose weight is not above it."""
    index = 0
    for i, s in enumerate(policy.steps):
        if s.weight <= weight:
            index = i
    return index


@dataclass(frozen=True)
class Transition:
    """What changed, for an Event (None when nothing did)."""

    reason: str
    message: str
    warning: bool = False


def _to(state: State, phase: Phase, now: datetime, reason: str, message: str, **kw: Any) -> State:
    return replace(state, phase=phase, since=now, reason=reason, message=message, **kw)


def step(
    state: State,
    desired: Release,
    policy: Rollout | None,
    now: datetime,
    *,
    preflight: Preflight = "pending",
    analysis: Result | None = None,
    override: Override = None,
) -> tuple[State, Transition | None]:
    """The next state. ``analysis`` is the result of a fresh analysis of the running
    candidate (None when none was due); ``preflight`` the candidate's preflight status."""
    policy = policy or Rollout()

    # First deployment: the desired release simply is stable.
    if state.stable is None:
        new = State(
            phase="Stable",
            stable=desired,
            since=now,
            reason="Deployed",
            message=f"{desired.named(None)} deployed",
        )
        return new, Transition("Deployed", new.message)
    if state.phase in ("Stable", "RolledBack"):
        if desired == state.stable:
            if state.phase == "RolledBack":  # the spec was put back: acknowledged
                new = _to(state, "Stable", now, "Stable", f"running {desired.named(None)}")
                return new, Transition("Stable", new.message)
            return state, None
        if state.phase == "RolledBack" and _rejected(state, desired):
            return state, None  # the rolled-back release is not retried by itself
        return _preflight(state, desired, now), Transition(
            "RolloutStarted",
            f"rolling out {desired.named(state.stable)} over {state.stable.named(desired)}",
        )

    # A rollout is in progress.
    assert state.candidate is not None
    if desired != state.candidate:
        if desired == state.stable:
            return _abort(state, now, "Reverted", "the spec went back to the stable release")
        return _preflight(state, desired, now), Transition(
            "RolloutRestarted", f"candidate replaced by {desired.named(state.stable)}"
        )
    if override == "abort":
        return _abort(state, now, "Aborted", "aborted by the frauddetection.io/abort annotation")
    if override == "promote":
        refused = _blocks_too_much(state, policy)
        if refused is not None:
            return state, Transition("PromotionRefused", refused, True)
        return _promote(state, now, "promoted by the frauddetection.io/promote annotation")
    if state.phase == "Promoting":
        return _promote(state, now, "all canary steps passed")
    if state.phase == "Preflight":
        if preflight == "failed":
            return _abort(
                state, now, "ModelPreflightFailed", "the candidate model failed its preflight"
            )
        if preflight == "pending":
            return state, None
        if policy.shadow is not None:
            new = _to(
                state, "Shadow", now, "Shadow", f"shadowing {state.candidate.named(state.stable)}"
            )
            return new, Transition("ShadowStarted", new.message)
        return _enter_step(state, policy, 0, now)
    if policy.paused:
        return replace(state, reason="Paused", message="rollout paused (spec.rollout.paused)"), None

    # Shadow or Canary: judge the analysis, then maybe advance.
    if analysis is not None:
        state = replace(
            state,
            last_analysis_at=now,
            last_analysis={
                "verdict": analysis.verdict,
                "reason": analysis.reason,
                "message": analysis.message,
                "values": analysis.values(),
                **({"rules": analysis.rules} if analysis.rules else {}),
            },
        )
        if analysis.verdict == "fail":
            failures = state.failures + 1
            if failures >= policy.analysis.failure_limit:
                return _abort(
                    replace(state, failures=failures), now, analysis.reason, analysis.message
                )
            return replace(state, failures=failures), Transition(
                "AnalysisFailed",
                f"{analysis.message} ({failures}/{policy.analysis.failure_limit})",
                True,
            )
    hold = (
        seconds(policy.shadow.duration)
        if state.phase == "Shadow" and policy.shadow
        else seconds(policy.steps[state.step].pause if policy.steps else "0s")
    )
    elapsed = (now - (state.since or now)).total_seconds()
    passed = state.last_analysis.get("verdict") == "pass"
    # No data for much longer than the phase should take: the candidate is not working.
    patience = hold + policy.analysis.failure_limit * seconds(policy.analysis.interval) * 3
    if not passed and elapsed > patience:
        return _abort(
            state,
            now,
            "NoAnalysisData",
            f"no conclusive analysis after {elapsed:.0f}s: "
            f"{state.last_analysis.get('message', 'no metrics')}",
        )
    if elapsed < hold or not passed:
        return state, None
    nxt = 0 if state.phase == "Shadow" else state.step + 1
    if nxt >= len(policy.steps):
        return _promote(state, now, "all canary steps passed")
    return _enter_step(state, policy, nxt, now)


def _rejected(state: State, desired: Release) -> bool:
    """Whether ``desired`` is the release last rolled back. A status written before rules were
    staged names the model version alone."""
    stable_rules = state.stable.rules if state.stable else None
    return state.rejected == desired.key or (
        state.rejected == desired.model.version and desired.rules == stable_rules
    )


def _blocks_too_much(state: State, policy: Rollout) -> str | None:
    """The guard on a manual promotion: refused while the last analysis measured the
    candidate blocking more than ``maxBlockShare`` of its transactions."""
    share = (state.last_analysis.get("values") or {}).get("block_share")
    limit = policy.analysis.max_block_share
    if share is None or share <= limit:
        return None
    assert state.candidate is not None
    return (
        f"promotion of {state.candidate.named(state.stable)} refused: it would block "
        f"{share:.1%} of transactions (maxBlockShare {limit:.1%}); fix it, or abort"
    )


def _preflight(state: State, candidate: Release, now: datetime) -> State:
    """A (new) candidate starts over: preflight first, no traffic, no history."""
    return _to(
        state,
        "Preflight",
        now,
        "Preflight",
        f"checking {candidate.named(state.stable)}",
        candidate=candidate,
        weight=0,
        step=0,
        failures=0,
        last_analysis={},
    )


def _enter_step(
    state: State, policy: Rollout, index: int, now: datetime
) -> tuple[State, Transition]:
    if not policy.steps:
        return _promote(state, now, "no canary steps configured")
    weight = policy.steps[index].weight
    new = _to(
        state,
        "Canary",
        now,
        "Canary",
        f"{weight}% of users on {state.candidate.named(state.stable) if state.candidate else '?'}",
        step=index,
        weight=weight,
        last_analysis={},
    )
    return new, Transition("CanaryStep", f"step {index + 1}/{len(policy.steps)}: {new.message}")


def _promote(state: State, now: datetime, why: str) -> tuple[State, Transition]:
    assert state.candidate is not None
    new = State(
        phase="Stable",
        stable=state.candidate,
        since=now,
        reason="Promoted",
        message=f"{state.candidate.named(state.stable)} promoted: {why}",
        last_analysis=state.last_analysis,
    )
    return new, Transition("Promoted", new.message)


def _abort(state: State, now: datetime, reason: str, message: str) -> tuple[State, Transition]:
    assert state.candidate is not None
    new = State(
        phase="RolledBack",
        stable=state.stable,
        since=now,
        reason=reason,
        message=f"{state.candidate.named(state.stable)} rolled back: {message}",
        rejected=state.candidate.key,
        failures=state.failures,
        last_analysis=state.last_analysis,
    )
    return new, Transition("RolledBack", new.message, True)


def without_rules(state: State, now: datetime) -> State:
    """``rollout.rules: immediate``: rules are not part of any release. A rollout of rules
    alone in progress has nothing left to roll out and ends; rule versions are forgotten."""

    def strip(r: Release | None) -> Release | None:
        return Release(r.model) if r is not None else None

    stable, candidate = strip(state.stable), strip(state.candidate)
    if state.phase not in ("Stable", "RolledBack") and candidate == stable:
        return State(
            phase="Stable",
            stable=stable,
            since=now,
            reason="RulesImmediate",
            message="rules are hot-reloaded (rollout.rules: immediate): rollout of rules ended",
            rejected=state.rejected,
        )
    return replace(state, stable=stable, candidate=candidate)


def analysis_due(state: State, policy: Rollout | None, now: datetime) -> bool:
    if state.phase not in ("Shadow", "Canary"):
        return False
    interval = timedelta(seconds=seconds((policy or Rollout()).analysis.interval))
    last = state.last_analysis_at or state.since or now
    return now - last >= interval
