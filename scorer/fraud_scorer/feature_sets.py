"""What the rest of the scorer (rules, model check, pipeline) and training know of the features:
their names, CEL types, version, and an engine that computes them.

:data:`V1` is the shipped set on its hand-written engine. :func:`feature_set` builds one from
the scorer's settings: declared definitions (``features.definitions``) run on
:class:`~fraud_scorer.declared_features.DeclaredFeatureEngine`, except the v1 definitions with
v1's horizon, which keep the hand-written engine (the same values, faster: docs/features.md).
Light: no numpy, no onnxruntime (the operator compiles rules against a set).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from fraud_scorer.contract import Transaction
from fraud_scorer.declared_features import DeclaredFeatureEngine, UnsupportedFeatureSet
from fraud_scorer.entity_features import JoinedEngine, Lookup
from fraud_scorer.feature_defs import V1_DEFINITIONS, CelType, FeatureSetDef, needs_stage
from fraud_scorer.features import FEATURE_NAMES, FEATURE_SET_VERSION, FEATURES, FeatureEngine


class Engine(Protocol):
    @property
    def horizon_s(self) -> float: ...
    @property
    def watermark(self) -> float: ...

    def compute(self, partition: int, tx: Transaction, ts: float) -> list[float]: ...
    def drop_partition(self, partition: int) -> None: ...
    def expire_idle(self) -> int: ...
    def user_count(self) -> int: ...


@dataclass(frozen=True)
class FeatureSet:
    version: str
    names: tuple[str, ...]
    cel_types: Mapping[str, CelType]
    history_hours: float
    # The engine of the event's and the user's features (all of them, unless ``staged``).
    own_engine: Callable[[], Engine] = field(compare=False)
    # The definitions, when some features come from the entity stage's table.
    staged: FeatureSetDef | None = None

    @property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def make_engine(self, table: Lookup | None = None) -> Engine:
        """The set's engine; a set with staged features joins ``table`` (the entity stage's
        output, or training's point-in-time replay of it)."""
        if self.staged is None:
            return self.own_engine()
        if table is None:
            raise UnsupportedFeatureSet(
                f"{needs_stage(self.staged)} come from the entity stage: give the scorer its "
                "table (topics.entity_features)"
            )
        own = self.own_engine()
        names = own.names if isinstance(own, DeclaredFeatureEngine) else FEATURE_NAMES
        return JoinedEngine(self.staged, own, names, table)


def v1(history_hours: float = 168.0, max_events_per_user: int = 64) -> FeatureSet:
    """The shipped set on its hand-written engine (version ``v1`` whatever the horizon, as
    before definitions existed)."""
    return FeatureSet(
        version=FEATURE_SET_VERSION,
        names=tuple(f.name for f in FEATURES),
        cel_types={f.name: f.cel_type for f in FEATURES},
        history_hours=history_hours,
        own_engine=lambda: FeatureEngine(history_hours, max_events_per_user),
    )


V1: FeatureSet = v1()


def declared(defs: FeatureSetDef) -> FeatureSet:
    """A declared set (its engine needs the entity table when some features are staged)."""
    if defs.version == FEATURE_SET_VERSION:  # v1, with v1's horizon (it is in the hash)
        return v1(defs.history_hours, defs.max_events_per_entity)
    staged = {f.name for f in defs.staged()}
    own = defs.model_copy(
        update={"features": tuple(f for f in defs.features if f.name not in staged)}
    )
    own_engine: Callable[[], Engine] = lambda: DeclaredFeatureEngine(defs)  # noqa: E731
    if staged and own.version == FEATURE_SET_VERSION:
        # v1 plus staged features: v1's part on its hand-written engine (same values, faster).
        own_engine = v1(defs.history_hours, defs.max_events_per_entity).own_engine
    return FeatureSet(
        version=defs.version,
        names=defs.names,
        cel_types=defs.cel_types(),
        history_hours=defs.history_hours,
        own_engine=own_engine,
        staged=defs if staged else None,
    )


def from_settings(
    definitions: FeatureSetDef | None, history_hours: float, max_events_per_user: int
) -> FeatureSet:
    """The scorer's set: its declared definitions, else v1 with the configured horizon."""
    if definitions is None:
        return v1(history_hours, max_events_per_user)
    return declared(definitions)


__all__ = ["V1", "V1_DEFINITIONS", "Engine", "FeatureSet", "declared", "from_settings", "v1"]
