"""Every name and label of every child, in one place.

Child names are deterministic functions of the FraudDetector (and the track or sink), so a pass
finds what an earlier pass created by name; labels say what a child is and whose it is, so
pruning can list the operator's own children instead of remembering them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fraud_operator.spec import GROUP, ModelRef

if TYPE_CHECKING:
    from fraud_operator.builders.objects import Detector

MANAGER: Final = "fraud-operator"

NAME: Final = "app.kubernetes.io/name"
INSTANCE: Final = "app.kubernetes.io/instance"
COMPONENT: Final = "app.kubernetes.io/component"
PART_OF: Final = "app.kubernetes.io/part-of"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
TRACK: Final = f"{GROUP}/track"
SINK: Final = f"{GROUP}/sink"

SCORER_APP: Final = "fraud-scorer"
SINK_APP: Final = "fraud-sink"
STAGE_APP: Final = "fraud-entity-stage"
CONSOLE_APP: Final = "fraud-console"

# -- names -------------------------------------------------------------------------------------


def scorer_name(d: Detector, track: str = "stable") -> str:
    """A track's Deployment, and its disruption budget and autoscaler."""
    return f"{d.name}-scorer" if track == "stable" else f"{d.name}-scorer-{track}"


def config_name(d: Detector, track: str = "stable") -> str:
    return f"{scorer_name(d, track)}-config"


def scorer_service_name(d: Detector) -> str:
    return f"{d.name}-scorer-metrics"


def scorer_monitor_name(d: Detector) -> str:
    return f"{d.name}-scorer"


def scorer_policy_name(d: Detector) -> str:
    return f"{d.name}-scorer"


def kafka_auth_name(d: Detector) -> str:
    """KEDA's TriggerAuthentication for the lag query."""
    return f"{d.name}-kafka"


def sink_name(d: Detector, kind: str) -> str:
    return f"{d.name}-sink-{kind}"


def sink_config_name(d: Detector, kind: str) -> str:
    return f"{sink_name(d, kind)}-config"


def sink_service_name(d: Detector) -> str:
    return f"{d.name}-sink-metrics"


def sink_monitor_name(d: Detector) -> str:
    return f"{d.name}-sinks"


def sinks_policy_name(d: Detector) -> str:
    return f"{d.name}-sinks"


def stage_name(d: Detector) -> str:
    """The entity stage's Deployment, its autoscaler and disruption budget."""
    return f"{d.name}-entity-stage"


def stage_config_name(d: Detector) -> str:
    return f"{stage_name(d)}-config"


def stage_group(d: Detector) -> str:
    return f"{d.consumer_group}-entity-stage"


def by_entity_topic(d: Detector) -> str:
    return d.spec.topics.by_entity or f"{d.name}-by-entity"


def entity_table_topic(d: Detector) -> str:
    return d.spec.topics.entity_features or f"{d.name}-entity-features"


def console_name(d: Detector) -> str:
    """The console's Deployment, Service, disruption budget and NetworkPolicy."""
    return f"{d.name}-console"


def console_config_name(d: Detector) -> str:
    return f"{console_name(d)}-config"


def preflight_name(d: Detector, model: ModelRef) -> str:
    """One Job per candidate artifact digest."""
    return f"{d.name}-preflight-{model.digest.removeprefix('sha256:')[:10]}"


def group_of(d: Detector, track: str) -> str:
    """Each track is its own consumer group: every track sees every message."""
    return d.consumer_group if track == "stable" else f"{d.consumer_group}-{track}"


def sink_group(d: Detector, kind: str) -> str:
    return f"{d.consumer_group}-sink-{kind}"


def shadow_topic(d: Detector) -> str:
    """Where the shadow track writes its decisions (never to alerts)."""
    return f"{d.spec.topics.decisions}-shadow"


# -- labels ------------------------------------------------------------------------------------


def _labels(d: Detector, app: str, component: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        NAME: app,
        INSTANCE: d.name,
        COMPONENT: component,
        PART_OF: "fraud-detector",
        MANAGED_BY: MANAGER,
        **extra,
    }


def labels(d: Detector, track: str | None = "stable") -> dict[str, str]:
    """A scorer child's labels (``track=None``: shared by every track)."""
    return _labels(d, SCORER_APP, "scorer", {TRACK: track} if track is not None else {})


def sink_labels(d: Detector, kind: str | None) -> dict[str, str]:
    """A sink child's labels (``kind=None``: shared by every sink)."""
    return _labels(d, SINK_APP, "sink", {SINK: kind} if kind is not None else {})


def stage_labels(d: Detector) -> dict[str, str]:
    return _labels(d, STAGE_APP, "entity-stage", {})


def console_labels(d: Detector) -> dict[str, str]:
    return _labels(d, CONSOLE_APP, "console", {})


def selector(d: Detector, track: str = "stable") -> dict[str, str]:
    """The immutable part of a track's labels: a Deployment's selector can never change."""
    return {**pods_of(d, SCORER_APP), TRACK: track}


def sink_selector(d: Detector, kind: str) -> dict[str, str]:
    return {**pods_of(d, SINK_APP), SINK: kind}


def pods_of(d: Detector, app: str) -> dict[str, str]:
    """Every scorer pod (all tracks, preflight too) or every sink pod of the detector."""
    return {NAME: app, INSTANCE: d.name}


def owned_by(d: Detector) -> dict[str, str]:
    """Every child the operator made for the detector (what pruning lists)."""
    return {INSTANCE: d.name, MANAGED_BY: MANAGER}
