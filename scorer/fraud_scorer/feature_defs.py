"""Features as declared data: one format for the scorer's config, the FraudDetector's
``spec.features`` and training (``docs/features.md``).

A feature set is a list of named definitions, each of one kind:

- ``field``: a contract field or ``attributes.<key>`` of the event itself, with a default when
  the event lacks it;
- ``hour_of_day`` and ``day_of_week`` (0 is Monday): of the event's timestamp, in its own
  offset;
- ``in``: whether a field's value is one of ``values``;
- ``window``: an aggregation over the *previous* events of the same entity inside a sliding
  window (``1h``, ``24h``, ``7d``, or ``horizon``: the whole history kept);
- ``travel_speed``: km/h implied by the previous event's place and this one's;
- ``label``: analysts' verdicts on an entity's transactions, over a window that ends ``delay``
  before now (a terminal's fraud rate over ``[t - delay - window, t - delay]``).

Windows per ``user_id`` (the input's partition key) are computed by the scorer itself. Windows
per any other entity, and every label feature, are computed by the **entity stage**
(:mod:`fraud_scorer.entity_features`), which publishes them to a table the scorers join.

Its **version** is a hash of the canonical definitions (``fs-`` and 12 hex digits), so a model
trained on one set is refused by a scorer computing another. The set the project shipped before
this format, v1, is :data:`V1_DEFINITIONS`; its hash is aliased to the name ``v1`` so that models
trained on it keep loading.

This module imports nothing heavy: the operator validates ``spec.features`` with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

CelType = Literal["double", "int", "bool"]
# Fields of the transaction contract a definition may read (and attributes.<key>).
NUMERIC_FIELDS: Final = ("amount", "lat", "lon")
TEXT_FIELDS: Final = (
    "user_id",
    "currency",
    "merchant",
    "merchant_category",
    "channel",
    "location",
    "device_id",
)
_ATTRIBUTE = re.compile(r"^attributes\.[A-Za-z0-9_.-]{1,64}$")
_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
_STAGE_MAX_EVENTS: Final = 100_000


def window_seconds(window: str, horizon_s: float) -> float:
    """``1h``/``24h``/``7d``/... in seconds; ``horizon`` is the whole history kept."""
    if window == "horizon":
        return horizon_s
    match = _DURATION.match(window)
    assert match is not None  # checked by the model
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _field_ok(value: str, *, numeric: bool) -> str:
    allowed = NUMERIC_FIELDS if numeric else (*NUMERIC_FIELDS, *TEXT_FIELDS)
    if value in allowed or _ATTRIBUTE.match(value):
        return value
    kinds = "numeric fields" if numeric else "fields"
    raise ValueError(
        f"{value!r} is not one of the contract's {kinds} ({', '.join(allowed)}) or attributes.<key>"
    )


class _Def(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    doc: str = ""


class FieldFeature(_Def):
    kind: Literal["field"]
    field: str
    type: CelType = "double"
    default: float = 0.0

    @field_validator("field")
    @classmethod
    def _known(cls, value: str) -> str:
        return _field_ok(value, numeric=True)


class HourOfDay(_Def):
    kind: Literal["hour_of_day"]


class DayOfWeek(_Def):
    """0 (Monday) to 6 (Sunday), in the timestamp's own offset."""

    kind: Literal["day_of_week"]


class InFeature(_Def):
    kind: Literal["in"]
    field: str
    values: tuple[str, ...] = Field(min_length=1, max_length=256)

    @field_validator("field")
    @classmethod
    def _known(cls, value: str) -> str:
        return _field_ok(value, numeric=False)


Aggregation = Literal[
    "count",  # events in the window
    "sum",  # of a numeric field
    "mean",
    "std",  # population standard deviation
    "zscore",  # (this event's value - mean) / std; 0 under 2 events or no spread
    "ratio_to_mean",  # this event's value / mean; 1 without history or a mean <= 0
    "min",
    "max",
    "distinct",  # distinct values of a field
    "time_since_last",  # seconds since the entity's previous event (the horizon if none)
    "changed",  # the field differs from the previous event's
    "seen_before",  # this event's value of the field occurred in the window
    "new_value",  # 1 - seen_before
]
_NEEDS_FIELD: Final = frozenset(Aggregation.__args__) - {"count", "time_since_last"}  # type: ignore[attr-defined]
_NUMERIC_AGGS: Final = frozenset({"sum", "mean", "std", "zscore", "ratio_to_mean", "min", "max"})


# Aggregations that compare this event with the entity's history: the scorer computes them
# per user, but a joined entity table holds the history's summary, not the comparison.
_PER_EVENT_AGGS: Final = frozenset(
    {"zscore", "ratio_to_mean", "changed", "seen_before", "new_value"}
)


def _check_window(window: str, delay: str | None) -> None:
    if window != "horizon" and not _DURATION.match(window):
        raise ValueError(f"window {window!r}: use a duration like 1h, 24h, 7d or 'horizon'")
    if delay is not None and not _DURATION.match(delay):
        raise ValueError(f"delay {delay!r}: use a duration like 0s, 12h or 7d")


class WindowFeature(_Def):
    kind: Literal["window"]
    agg: Aggregation
    of: str | None = None
    window: str = "horizon"
    entity: str = "user_id"
    # The window ends this long before now (entity-stage features only).
    delay: str | None = None

    @property
    def staged(self) -> bool:
        """Computed by the entity stage (another entity than the partition key)."""
        return self.entity != "user_id"

    @model_validator(mode="after")
    def _consistent(self) -> WindowFeature:
        _check_window(self.window, self.delay)
        if self.staged and self.agg in _PER_EVENT_AGGS:
            raise ValueError(
                f"aggregation {self.agg!r} per {self.entity} compares this event with the "
                "entity's history, which the entity table summarises: use mean, std, min or "
                "max per entity (the model combines them with the event's own value)"
            )
        if self.delay is not None and not self.staged:
            raise ValueError(
                "delay applies to features of the entity stage (another entity than user_id, "
                "or kind: label)"
            )
        if self.delay is not None and self.agg == "time_since_last":
            raise ValueError("time_since_last takes no delay")
        if self.agg in _NEEDS_FIELD and self.of is None:
            raise ValueError(f"aggregation {self.agg!r} needs `of` (the field it aggregates)")
        if self.agg not in _NEEDS_FIELD and self.of is not None:
            raise ValueError(f"aggregation {self.agg!r} takes no `of`")
        if self.of is not None:
            _field_ok(self.of, numeric=self.agg in _NUMERIC_AGGS)
        _field_ok(self.entity, numeric=False)
        return self

    @property
    def cel_type(self) -> CelType:
        if self.agg in ("count", "distinct"):
            return "int"
        if self.agg in ("changed", "seen_before", "new_value"):
            return "bool"
        return "double"


class TravelSpeed(_Def):
    kind: Literal["travel_speed"]


class LabelFeature(_Def):
    """Verdicts on the entity's transactions whose time is in ``[now - delay - window,
    now - delay]``: ``fraud_count`` of them, or ``fraud_rate`` (frauds / transactions there;
    0 without any). A verdict counts once it has arrived (training: at its ``labelled_at``, else
    at the transaction's time), so choose a delay no shorter than your labelling latency."""

    kind: Literal["label"]
    agg: Literal["fraud_count", "fraud_rate"]
    window: str
    delay: str = "0s"
    entity: str = "user_id"
    staged: ClassVar[bool] = True

    @model_validator(mode="after")
    def _consistent(self) -> LabelFeature:
        _check_window(self.window, self.delay)
        _field_ok(self.entity, numeric=False)
        return self


FeatureDef = Annotated[
    FieldFeature | HourOfDay | DayOfWeek | InFeature | WindowFeature | TravelSpeed | LabelFeature,
    Field(discriminator="kind"),
]
StagedFeature = WindowFeature | LabelFeature


class FeatureSetDef(BaseModel):
    """A whole feature set, as written in a file or a FraudDetector (which may spell the two
    top-level settings in camelCase: ``historyHours``, ``maxEventsPerEntity``)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    features: tuple[FeatureDef, ...] = Field(min_length=1, max_length=256)
    history_hours: float = Field(default=168.0, gt=0, le=24 * 90)
    max_events_per_entity: int = Field(default=64, ge=2, le=4096)
    # The entity stage's bound per key (a busy merchant has many more events than a user).
    stage_max_events_per_entity: int = Field(default=_STAGE_MAX_EVENTS, ge=2, le=10_000_000)

    @model_validator(mode="after")
    def _unique(self) -> FeatureSetDef:
        counts = Counter(f.name for f in self.features)
        repeated = sorted(name for name, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(f"feature names used twice: {', '.join(repeated)}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def cel_types(self) -> dict[str, CelType]:
        out: dict[str, CelType] = {}
        for f in self.features:
            if isinstance(f, FieldFeature):
                out[f.name] = f.type
            elif isinstance(f, HourOfDay | DayOfWeek):
                out[f.name] = "int"
            elif isinstance(f, InFeature):
                out[f.name] = "bool"
            elif isinstance(f, WindowFeature):
                out[f.name] = f.cel_type
            elif isinstance(f, LabelFeature):
                out[f.name] = "int" if f.agg == "fraud_count" else "double"
            else:
                out[f.name] = "double"
        return out

    def entities(self) -> tuple[str, ...]:
        """The entity keys the set aggregates over (``user_id`` is the partition key)."""
        return tuple(
            sorted({f.entity for f in self.features if isinstance(f, WindowFeature | LabelFeature)})
        )

    def staged(self) -> tuple[StagedFeature, ...]:
        """The features the entity stage computes, in the set's order."""
        return tuple(
            f for f in self.features if isinstance(f, WindowFeature | LabelFeature) and f.staged
        )

    def stage_entities(self) -> tuple[str, ...]:
        return tuple(sorted({f.entity for f in self.staged()}))

    def stage_horizon_s(self) -> float:
        """How far back the stage keeps an entity's transactions: the longest window plus its
        delay."""
        horizon = self.history_hours * 3600.0
        return max(
            (window_seconds(f.window, horizon) + window_seconds(f.delay or "0s", horizon)
             for f in self.staged()),
            default=0.0,
        )  # fmt: skip

    @property
    def version(self) -> str:
        """``v1`` for the shipped set, else ``fs-`` + 12 hex digits of the canonical form
        (docs do not count: renaming a feature's description keeps models loading)."""
        digest = _canonical_hash(self)
        return _ALIASES.get(digest, f"fs-{digest[:12]}")


def _canonical_hash(defs: FeatureSetDef) -> str:
    body = defs.model_dump(mode="json", exclude={"features": {"__all__": {"doc"}}})
    # Settings added after sets were first hashed count only when used, so that a set written
    # before them keeps its version (and its models keep loading).
    if body["stage_max_events_per_entity"] == _STAGE_MAX_EVENTS:
        del body["stage_max_events_per_entity"]
    for feature in body["features"]:
        if feature.get("kind") == "window" and feature.get("delay") is None:
            feature.pop("delay", None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def needs_stage(defs: FeatureSetDef) -> str | None:
    """What in ``defs`` only the entity stage computes (None: the scorer alone can)."""
    staged = defs.staged()
    if not staged:
        return None
    labels = [f.name for f in staged if isinstance(f, LabelFeature)]
    entities = sorted({f.entity for f in staged if isinstance(f, WindowFeature)})
    what = []
    if entities:
        what.append(f"aggregations per {', '.join(entities)}")
    if labels:
        what.append(f"label features ({', '.join(labels)})")
    return " and ".join(what)


def parse_feature_set(raw: Any) -> FeatureSetDef:
    return FeatureSetDef.model_validate(raw)


_CNP = ("online", "app", "moto", "ecommerce", "web")
# The set the scorer computed before definitions existed, written in the format. Its values
# are the same as the hand-written engine's (tests/scorer/test_feature_defs.py).
V1_DEFINITIONS: Final = FeatureSetDef.model_validate(
    {
        "features": [
            {"name": "amount", "kind": "field", "field": "amount",
             "doc": "transaction amount in its currency"},
            {"name": "hour_of_day", "kind": "hour_of_day",
             "doc": "hour of the event in the timestamp's own offset"},
            {"name": "card_not_present", "kind": "in", "field": "channel", "values": _CNP,
             "doc": "channel is online, app or mail/phone order"},
            {"name": "history_count", "kind": "window", "agg": "count",
             "doc": "user's events in the history horizon"},
            {"name": "tx_count_1h", "kind": "window", "agg": "count", "window": "1h",
             "doc": "user's events in the hour before this one"},
            {"name": "tx_count_24h", "kind": "window", "agg": "count", "window": "24h",
             "doc": "user's events in the 24 hours before this one"},
            {"name": "amount_sum_24h", "kind": "window", "agg": "sum", "of": "amount",
             "window": "24h", "doc": "sum of the user's amounts in the previous 24 h"},
            {"name": "amount_zscore", "kind": "window", "agg": "zscore", "of": "amount",
             "doc": "amount against the user's history (0 if < 2 events)"},
            {"name": "amount_to_mean", "kind": "window", "agg": "ratio_to_mean", "of": "amount",
             "doc": "amount / user's mean amount (1 if no history)"},
            {"name": "seconds_since_last", "kind": "window", "agg": "time_since_last",
             "doc": "since the user's previous event (horizon if none)"},
            {"name": "location_changed", "kind": "window", "agg": "changed", "of": "location",
             "doc": "country differs from the previous event's"},
            {"name": "travel_speed_kmh", "kind": "travel_speed",
             "doc": "implied speed from the previous event's place"},
            {"name": "device_seen_before", "kind": "window", "agg": "seen_before",
             "of": "device_id", "doc": "device used by this user in the horizon"},
            {"name": "merchant_category_new", "kind": "window", "agg": "new_value",
             "of": "merchant_category", "doc": "first event in this merchant category"},
        ]
    }
)  # fmt: skip
_ALIASES: Final = {_canonical_hash(V1_DEFINITIONS): "v1"}
