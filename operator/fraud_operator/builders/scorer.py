"""The scorer's workload per track: its config file, ConfigMap and Deployment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml
from pydantic import ValidationError

from fraud_operator.builders.names import (
    INSTANCE,
    TRACK,
    config_name,
    entity_table_topic,
    group_of,
    labels,
    scorer_name,
    selector,
    shadow_topic,
)
from fraud_operator.builders.objects import (
    CONFIG_DIR,
    CONTAINER_SECURITY,
    MODEL_ANNOTATION,
    RESTART_ANNOTATION,
    STABLE,
    USERS_ANNOTATION,
    Detector,
    TrackPlan,
    content_hash,
    fetch_args,
    kafka_config,
    kafka_env,
    model_identity,
    pod_spec,
    pod_volumes,
    scorer_object,
    staged_features,
)
from fraud_operator.spec import GROUP, ModelRef, Rulebook

METRICS_PORT: Final = 9102
CONFIG_FILE: Final = "scorer.yaml"
MODEL_DIR: Final = "/models/current"


def scorer_config(d: Detector, plan: TrackPlan = STABLE) -> dict[str, Any]:
    """The scorer's config file (``fraud_scorer.config.ScorerSettings``), minus the password,
    which reaches the pod only as an environment variable from its Secret."""
    spec, track, rulebook = d.spec, plan.track, plan.rulebook_of(d)
    kafka = kafka_config(d, group_of(d, track), f"{d.name}-{track}")
    if track != "stable":
        # A new candidate group starts where stable is: from the log's start, a canary would
        # decide its slice of the whole retained log again, alerts included, and a shadow
        # would read as hours of latency.
        kafka["start_from_group"] = group_of(d, "stable")
    return {
        "detector": d.name,
        "track": track,
        "kafka": kafka,
        "topics": {
            "input": spec.topics.input,
            "decisions": shadow_topic(d) if track == "shadow" else spec.topics.decisions,
            "alerts": spec.topics.alerts,
            "dead_letter": spec.topics.dead_letter,
            # Only when the stage runs: existing detectors' configs (and pods) stay as they were.
            **({"entity_features": entity_table_topic(d)} if staged_features(d) else {}),
        },
        # The fallback only when not the default: existing detectors' pods do not restart.
        "model": {"path": MODEL_DIR, "digest": plan.model_of(d).digest}
        | ({"on_error": "review"} if spec.scorer.on_model_error == "review" else {}),
        # Only when declared: existing detectors' configs (and pods) stay as they were.
        **({"features": {"definitions": spec.features}} if spec.features is not None else {}),
        "rules": [r.model_dump() for r in rulebook.rules],
        "decision": rulebook.decision.model_dump(),
        "slice": {"start": plan.start, "end": plan.end},
        "output": {
            "alerts": track != "shadow",
            "dead_letters": track == "stable",
            # Only when set: existing detectors' configs (and pods) stay as they were.
            **(
                {"carry_fields": list(spec.scorer.alert_carry_fields)}
                if spec.scorer.alert_carry_fields
                else {}
            ),
        },
        "metrics": {"host": "0.0.0.0", "port": METRICS_PORT},  # noqa: S104 - scraped in-cluster
    }


def config_map(d: Detector, plan: TrackPlan = STABLE) -> dict[str, Any]:
    text = yaml.safe_dump(scorer_config(d, plan), sort_keys=False)
    return scorer_object(
        d, "v1", "ConfigMap", config_name(d, plan.track), {"data": {CONFIG_FILE: text}}, plan.track
    )


def _restart_hash(d: Detector, plan: TrackPlan) -> str:
    """Changes that need new pods. Rules, thresholds and the user slice are hot-reloaded from
    the mounted file by the running scorer, so they are left out: editing a rule or moving a
    canary step restarts nothing."""
    config = scorer_config(d, plan)
    for key in ("rules", "decision", "slice"):
        config.pop(key)
    return content_hash({"config": config, "model": plan.model_of(d).model_dump()})


def deployment(d: Detector, plan: TrackPlan = STABLE) -> dict[str, Any]:
    """The scorer for one track. ``replicas`` is not set: the autoscaler owns it (setting it
    here would fight the HPA on every pass). Pods are spread across nodes and zones."""
    spec, track, model = d.spec, plan.track, plan.model_of(d)
    volumes, mounts = pod_volumes(
        d, config_name(d, track), "64Mi", extra=(("model", "512Mi", "/models"),)
    )
    env = kafka_env(d)
    resources = spec.scorer.resources.model_dump(exclude_none=True)
    probe = {"port": METRICS_PORT}
    container = {
        "name": "scorer",
        "image": d.scorer_image,
        "imagePullPolicy": spec.scorer.image_pull_policy,
        "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "resources": resources,
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    fetch = {
        "name": "fetch-model",
        "image": d.scorer_image,
        "imagePullPolicy": spec.scorer.image_pull_policy,
        "command": ["python", "-m", "fraud_scorer.fetch"],
        "args": [*fetch_args(model), "--dest", MODEL_DIR],
        "resources": resources,
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "model", "mountPath": "/models"},
            next(m for m in mounts if m["name"] == "tmp"),
        ],
    }
    pod_labels = labels(d, track)
    return scorer_object(
        d,
        "apps/v1",
        "Deployment",
        scorer_name(d, track),
        {
            "spec": {
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": selector(d, track)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {
                            RESTART_ANNOTATION: _restart_hash(d, plan),
                            f"{GROUP}/model-version": model.version,
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(METRICS_PORT),
                        },
                    },
                    "spec": pod_spec(
                        d,
                        [container],
                        volumes,
                        initContainers=[fetch],
                        **model_identity(model),
                        affinity={
                            "podAntiAffinity": {
                                "preferredDuringSchedulingIgnoredDuringExecution": [
                                    {
                                        "weight": 100,
                                        "podAffinityTerm": {
                                            "topologyKey": "kubernetes.io/hostname",
                                            "labelSelector": {"matchLabels": selector(d, track)},
                                        },
                                    }
                                ]
                            }
                        },
                        topologySpreadConstraints=[
                            {
                                "maxSkew": 1,
                                "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": {"matchLabels": selector(d, track)},
                            }
                        ],
                    ),
                },
            }
        },
        track,
        # Metadata only: moving a canary step rewrites these without restarting a pod.
        {
            MODEL_ANNOTATION: model.model_dump_json(by_alias=True),
            USERS_ANNOTATION: f"{plan.start}-{plan.end}",
        },
    )


@dataclass(frozen=True)
class RunningTrack:
    """What one live scorer Deployment runs, read back from its labels and annotations."""

    track: str
    model: ModelRef
    start: int
    end: int


def running_track(d: Detector, live: dict[str, Any] | None) -> RunningTrack | None:
    """The inverse of :func:`deployment` on a live object: None when there is none, when it is
    not this detector's, or when it predates these annotations."""
    meta = (live or {}).get("metadata") or {}
    tags, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    if tags.get(INSTANCE) != d.name or TRACK not in tags:
        return None
    try:
        model = ModelRef.model_validate_json(notes[MODEL_ANNOTATION])
        start, end = (int(x) for x in notes[USERS_ANNOTATION].split("-"))
    except (KeyError, ValueError):  # pydantic's ValidationError is a ValueError
        return None
    return RunningTrack(tags[TRACK], model, start, end)


def running_rulebook(d: Detector, live: dict[str, Any] | None) -> tuple[str, Rulebook] | None:
    """The track and the rules and thresholds a live scorer ConfigMap of ``d`` holds: what
    that track's scorers have hot-reloaded. None when it is not one, or cannot be read."""
    meta = (live or {}).get("metadata") or {}
    tags = meta.get("labels") or {}
    if tags.get(INSTANCE) != d.name or TRACK not in tags:
        return None
    try:
        raw = yaml.safe_load(((live or {}).get("data") or {})[CONFIG_FILE])
        book = Rulebook.model_validate({"rules": raw["rules"], "decision": raw["decision"]})
    except (KeyError, TypeError, yaml.YAMLError, ValidationError):
        return None
    return tags[TRACK], book
