"""The feature engine for a declared feature set (:mod:`fraud_scorer.feature_defs`).

Same contract as the hand-written v1 engine (:class:`fraud_scorer.features.FeatureEngine`):
per-partition state, ``compute`` returns one event's row (in the set's order) and then folds
the event in, and every value depends only on the entity's events inside a bounded horizon, so
a replay after a restart or rebalance reproduces it. Given :data:`V1_DEFINITIONS` it computes
the v1 engine's values (``tests/scorer/test_declared_features.py``).

This step aggregates per ``user_id``, the input's partition key. Other entities (a merchant's
or a device's events are spread over every partition) need the entity stage; a set that uses
them is refused with :class:`UnsupportedFeatureSet` until it exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fraud_scorer.contract import Transaction
from fraud_scorer.feature_defs import (
    FeatureSetDef,
    FieldFeature,
    HourOfDay,
    InFeature,
    TravelSpeed,
    WindowFeature,
    window_seconds,
)
from fraud_scorer.features import _MIN_TRAVEL_HOURS, _place, haversine_km

_EXPIRY_MARGIN_S = 3600.0


class UnsupportedFeatureSet(ValueError):
    """A definition this scorer cannot compute yet; the message says which and why."""


def _reader(field: str) -> Callable[[Transaction], Any]:
    """The value of a contract field or ``attributes.<key>`` (None when missing)."""
    if field.startswith("attributes."):
        key = field.removeprefix("attributes.")
        return lambda tx: tx.attributes.get(key)
    return lambda tx: getattr(tx, field)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class _Entity:
    __slots__ = ("events",)

    def __init__(self) -> None:
        # (ts, values of the fields the set aggregates, place) per event, in arrival order.
        self.events: list[tuple[float, tuple[Any, ...], tuple[float, float]]] = []


class DeclaredFeatureEngine:
    """Computes a :class:`FeatureSetDef` per event; see the module's docstring."""

    def __init__(self, defs: FeatureSetDef) -> None:
        others = [e for e in defs.entities() if e != "user_id"]
        if others:
            raise UnsupportedFeatureSet(
                f"aggregations per {', '.join(others)} need the entity stage, which this "
                "version does not run yet: aggregate per user_id"
            )
        self.defs = defs
        self.horizon_s = defs.history_hours * 3600.0
        self.max_events = defs.max_events_per_entity
        kept = sorted({f.of for f in defs.features if isinstance(f, WindowFeature) and f.of})
        self._kept = tuple(_reader(f) for f in kept)
        slot = {field: i for i, field in enumerate(kept)}
        self._windows = sorted(
            {window_seconds(f.window, self.horizon_s) for f in defs.features
             if isinstance(f, WindowFeature)}
        )  # fmt: skip
        self._steps = [self._compile(f, slot) for f in defs.features]
        self.partitions: dict[int, dict[str, _Entity]] = {}
        self.watermark = -math.inf

    def _compile(self, f: Any, slot: dict[str, int]) -> Callable[..., float]:
        """One feature as ``step(tx, ts, own, window_events, last) -> float``."""
        if isinstance(f, FieldFeature):
            read, default = _reader(f.field), f.default

            def field(tx: Transaction, *_: Any) -> float:
                value = _number(read(tx))
                return default if value is None else value

            return field
        if isinstance(f, HourOfDay):
            return lambda tx, *_: float(tx.timestamp.hour)
        if isinstance(f, InFeature):
            read_text, values = _reader(f.field), frozenset(f.values)
            return lambda tx, *_: 1.0 if read_text(tx) in values else 0.0
        if isinstance(f, TravelSpeed):
            return self._travel_speed
        assert isinstance(f, WindowFeature)
        return self._window(f, slot)

    def _travel_speed(self, tx: Transaction, ts: float, own: Any, _in: Any, last: Any) -> float:
        if last is None:
            return 0.0
        last_ts, _, (last_lat, last_lon) = last
        lat, lon = own[1]
        if last_lat == lat and last_lon == lon:
            return 0.0
        hours = max(max(ts - last_ts, 0.0) / 3600.0, _MIN_TRAVEL_HOURS)
        speed = haversine_km(last_lat, last_lon, lat, lon) / hours
        return 0.0 if math.isnan(speed) else speed

    def _window(self, f: WindowFeature, slot: dict[str, int]) -> Callable[..., float]:
        w = self._windows.index(window_seconds(f.window, self.horizon_s))
        i = slot.get(f.of, -1) if f.of else -1
        agg = f.agg
        horizon = self.horizon_s

        def values(events: list[Any]) -> list[Any]:
            return [e[1][i] for e in events]

        def numbers(events: list[Any]) -> list[float]:
            out = [_number(e[1][i]) for e in events]
            return [x for x in out if x is not None]

        if agg == "count":
            return lambda tx, ts, own, windows, last: float(len(windows[w]))
        if agg == "time_since_last":
            return lambda tx, ts, own, windows, last: (
                horizon if last is None else max(ts - last[0], 0.0)
            )
        if agg == "changed":
            return lambda tx, ts, own, windows, last: (
                0.0 if last is None else float(last[1][i] != own[0][i])
            )
        if agg in ("seen_before", "new_value"):
            hit, miss = (1.0, 0.0) if agg == "seen_before" else (0.0, 1.0)
            return lambda tx, ts, own, windows, last: (
                hit if own[0][i] in values(windows[w]) else miss
            )
        if agg == "distinct":
            return lambda tx, ts, own, windows, last: float(len(set(values(windows[w]))))

        def numeric(tx: Transaction, ts: float, own: Any, windows: Any, last: Any) -> float:
            xs = numbers(windows[w])
            n = len(xs)
            x = _number(own[0][i])
            if agg == "sum":
                return math.fsum(xs)
            if agg == "min":
                return min(xs) if xs else 0.0
            if agg == "max":
                return max(xs) if xs else 0.0
            mean = math.fsum(xs) / n if n else 0.0
            if agg == "mean":
                return mean
            if agg == "ratio_to_mean":
                return x / mean if n and mean > 0 and x is not None else 1.0
            # Identical values have no spread, exactly (not a rounding residue of the mean).
            spread = n >= 2 and min(xs) != max(xs)
            std = math.sqrt(math.fsum((v - mean) ** 2 for v in xs) / n) if spread else 0.0
            if agg == "std":
                return std
            return (x - mean) / std if std > 0 and x is not None else 0.0  # zscore

        return numeric

    def compute(self, partition: int, tx: Transaction, ts: float) -> list[float]:
        entities = self.partitions.get(partition)
        if entities is None:
            entities = self.partitions[partition] = {}
        state = entities.get(tx.user_id)
        if state is None:
            state = entities[tx.user_id] = _Entity()
        self.watermark = max(self.watermark, ts)
        events = state.events
        cut = 0
        while cut < len(events) and events[cut][0] <= ts - self.horizon_s:
            cut += 1
        if cut:
            del events[:cut]
        own = (tuple(read(tx) for read in self._kept), _place(tx))
        # ``horizon`` is every event kept (as in v1: a late event may sit behind a newer one).
        windows = [
            events if span >= self.horizon_s else [e for e in events if e[0] > ts - span]
            for span in self._windows
        ]
        last = events[-1] if events else None
        row = [step(tx, ts, own, windows, last) for step in self._steps]
        events.append((ts, own[0], own[1]))
        if len(events) > self.max_events:
            del events[: len(events) - self.max_events]
        return row

    def drop_partition(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def expire_idle(self) -> int:
        cutoff = self.watermark - self.horizon_s - _EXPIRY_MARGIN_S
        dropped = 0
        for entities in self.partitions.values():
            stale = [k for k, st in entities.items() if st.events[-1][0] <= cutoff]
            for k in stale:
                del entities[k]
            dropped += len(stale)
        return dropped

    def user_count(self) -> int:
        return sum(len(e) for e in self.partitions.values())
