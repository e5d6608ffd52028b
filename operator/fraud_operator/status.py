"""Status, rebuilt from what exists on every pass (never trusted from the last one).

Conditions follow the Kubernetes API conventions: CamelCase ``reason``, a human ``message``,
``observedGeneration``, and a ``lastTransitionTime`` that changes only when the status flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fraud_operator.validation import Problem

CONDITIONS = ("Ready", "Progressing", "Degraded", "ModelReady", "RulesValid")


def condition(
    kind: str,
    ok: bool | None,
    reason: str,
    message: str,
    *,
    generation: int,
    previous: Sequence[dict[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    before = next((c for c in previous if c.get("type") == kind), None)
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == status and before.get("lastTransitionTime")
        else now
    )
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def build_status(
    *,
    generation: int,
    problems: Sequence[Problem],
    deployment: dict[str, Any] | None,
    model_version: str | None,
    rules_version: str | None,
    previous: Sequence[dict[str, Any]],
    now: str,
    stage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole status: phase, replica counts and the five conditions. ``stage``: the entity
    stage's Deployment when the features need one (the detector is not Ready without a ready
    stage pod: its scorers would wait for the table)."""

    def cond(kind: str, ok: bool | None, reason: str, message: str) -> dict[str, Any]:
        return condition(
            kind, ok, reason, message, generation=generation, previous=previous, now=now
        )

    stage_wanted = stage_ready = None
    if stage is not None:
        stage_wanted = int(stage.get("spec", {}).get("replicas") or 0)
        stage_ready = int(stage.get("status", {}).get("readyReplicas") or 0)
    dep_status = (deployment or {}).get("status", {})
    wanted = int((deployment or {}).get("spec", {}).get("replicas") or 0)
    ready = int(dep_status.get("readyReplicas") or 0)
    updated = int(dep_status.get("updatedReplicas") or 0)
    rules_problem = next((p for p in problems if p.condition == "RulesValid"), None)
    model_problem = next((p for p in problems if p.condition == "ModelReady"), None)
    conditions = [
        cond(
            "RulesValid",
            rules_problem is None,
            rules_problem.reason if rules_problem else "Compiled",
            rules_problem.message if rules_problem else "every rule compiles",
        )
    ]
    if problems:
        first = problems[0]
        conditions += [
            cond("Ready", False, first.reason, first.message),
            cond("Progressing", False, first.reason, "waiting for a valid spec"),
            cond("Degraded", True, first.reason, first.message),
            cond("ModelReady", False, model_problem.reason, model_problem.message)
            if model_problem
            else cond("ModelReady", None, "NotChecked", "the spec is not valid"),
        ]
        phase = "Degraded"
    elif deployment is None:
        conditions += [
            cond("Ready", False, "Creating", "the scorer Deployment is being created"),
            cond("Progressing", True, "Creating", "creating the scorer"),
            cond("Degraded", False, "AsExpected", "no problem found"),
            cond("ModelReady", None, "WaitingForPods", "no scorer pod yet"),
        ]
        phase = "Pending"
    else:
        rolling = updated < wanted or ready < wanted or wanted == 0
        all_ready = ready >= max(wanted, 1) and not rolling
        reason = "ScorersReady" if all_ready else "ReplicasNotReady"
        message = f"{ready}/{wanted} scorer replica(s) ready"
        if stage_wanted is not None:
            message += f", {stage_ready}/{stage_wanted} entity stage replica(s) ready"
            if all_ready and not stage_ready:
                all_ready, reason = False, "EntityStageNotReady"
        conditions += [
            cond("Ready", all_ready, reason, message),
            cond(
                "Progressing",
                rolling,
                "RollingOut" if rolling else "Stable",
                f"{updated}/{wanted} replica(s) updated, {ready} ready",
            ),
            cond("Degraded", False, "AsExpected", "no problem found"),
            cond(
                "ModelReady",
                True if ready else None,
                "Loaded" if ready else "WaitingForPods",
                f"model {model_version} loaded by {ready} pod(s)"
                if ready
                else "no ready scorer pod has loaded the model yet",
            ),
        ]
        phase = "Ready" if all_ready else "Pending"
    order = {k: i for i, k in enumerate(CONDITIONS)}
    conditions.sort(key=lambda c: order[c["type"]])
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "replicas": wanted,
        "readyReplicas": ready,
        "conditions": conditions,
    }
    if stage_wanted is not None:
        status["entityStage"] = {"replicas": stage_wanted, "readyReplicas": stage_ready}
    if model_version is not None and not problems:
        status["stableVersion"] = model_version
    if rules_version is not None:
        status["rulesVersion"] = rules_version
    return status


def transitions(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Conditions whose status or reason changed: what deserves an Event."""
    old = {c.get("type"): (c.get("status"), c.get("reason")) for c in before}
    return [c for c in after if old.get(c["type"]) != (c["status"], c["reason"])]
