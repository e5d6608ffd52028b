"""The feature engine for a declared feature set (:mod:`fraud_scorer.feature_defs`).

Same contract as the hand-written v1 engine (:class:`fraud_scorer.features.FeatureEngine`):
per-partition state, ``compute`` returns one event's row (in the set's order) and then folds
the event in, and every value depends only on the entity's events inside a bounded horizon, so
a replay after a restart or rebalance reproduces it. Given :data:`V1_DEFINITIONS` it computes
the v1 engine's values (``tests/scorer/test_declared_features.py``).

This engine computes the features of the event and of its user (``user_id``, the input's
partition key). Features of other entities and from labels come from the entity stage
(:mod:`fraud_scorer.entity_features`); :attr:`DeclaredFeatureEngine.names` says which this
engine computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fraud_scorer.contract import Transaction
from fraud_scorer.feature_defs import (
    DayOfWeek,
    FeatureSetDef,
    FieldFeature,
    HourOfDay,
    InFeature,
    TravelSpeed,
    WindowFeature,
    window_seconds,
)
from fraud_scorer.features import _MIN_TRAVEL_HOURS, EntityStates, _place, haversine_km


class UnsupportedFeatureSet(ValueError):
    """A definition this scorer cannot compute as configured; the message says which and why."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class _Entity:
    __slots__ = ("events",)

    def __init__(self) -> None:
        # (ts, the values of the fields the set aggregates, [lat, lon]) per event, flat (the
        # compiled loop unpacks it into locals), in arrival order.
        self.events: list[tuple[Any, ...]] = []


def _std(xs: list[float]) -> float:
    """Population standard deviation; identical values have none, exactly."""
    n = len(xs)
    if n < 2 or min(xs) == max(xs):
        return 0.0
    mean = sum(xs) / n
    return math.sqrt(sum((v - mean) ** 2 for v in xs) / n)


def _zscore(x: float | None, xs: list[float], n: int, total: float) -> float:
    if x is None or n < 2:
        return 0.0
    std = _std(xs)
    return (x - total / n) / std if std > 0 else 0.0


def _cents_zscore(x: int, n: int, total: int, squares: int) -> float:
    """z-score of ``x`` against ``n`` values with integer sum and sum of squares (v1's)."""
    spread = n * squares - total * total  # exact: n^2 times the variance
    return (x - total / n) * n / math.sqrt(spread) if n >= 2 and spread > 0 else 0.0


def _ratio_to_mean(x: float | None, n: int, total: float) -> float:
    return x / (total / n) if n and total > 0 and x is not None else 1.0


def _speed(ts: float, lat: float, lon: float, last: Any) -> float:
    """km/h from the previous event's place (its last two values) to this one's."""
    if last is None:
        return 0.0
    last_ts, last_lat, last_lon = last[0], last[-2], last[-1]
    if last_lat == lat and last_lon == lon:
        return 0.0
    hours = max(max(ts - last_ts, 0.0) / 3600.0, _MIN_TRAVEL_HOURS)
    speed = haversine_km(last_lat, last_lon, lat, lon) / hours
    return 0.0 if math.isnan(speed) else speed


class DeclaredFeatureEngine(EntityStates[_Entity]):
    """Computes a :class:`FeatureSetDef` per event; see the module's docstring.

    The definitions are compiled into one Python function (``self.source``): a single pass over
    the entity's events feeds every window's accumulators, as the hand-written v1 engine does,
    instead of one pass per feature (measured: 2-3.5x slower; see docs/features.md)."""

    def __init__(self, defs: FeatureSetDef) -> None:
        super().__init__(defs.history_hours * 3600.0)
        staged = {f.name for f in defs.staged()}
        defs = defs.model_copy(
            update={"features": tuple(f for f in defs.features if f.name not in staged)}
        )
        self.defs = defs
        self.names = defs.names
        self.max_events = defs.max_events_per_entity
        kept = sorted({f.of for f in defs.features if isinstance(f, WindowFeature) and f.of})
        self.source, self._row, self._event = _compile(defs, kept, self.horizon_s)

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
        event = self._event(tx, ts)
        row: list[float] = self._row(tx, ts, event, events)
        events.append(event)
        if len(events) > self.max_events:
            del events[: len(events) - self.max_events]
        return row


def _access(field: str) -> str:
    """Python reading a contract field or ``attributes.<key>`` of ``tx`` (None when missing)."""
    if field.startswith("attributes."):
        return f"tx.attributes.get({field.removeprefix('attributes.')!r})"
    return f"tx.{field}"


def _compile(
    defs: FeatureSetDef, kept: list[str], horizon_s: float
) -> tuple[str, Callable[..., list[float]], Callable[[Transaction, float], tuple[Any, ...]]]:
    """The source of ``row(tx, ts, event, events) -> list[float]`` and of
    ``event(tx, ts) -> tuple`` (``ts``, this event's values of ``kept``, and its place when a
    feature needs it) for ``defs``, and both functions.
    ``events`` are the entity's previous events, in arrival order."""
    slot = {field: i for i, field in enumerate(kept)}
    namespace: dict[str, Any] = {
        "math": math, "_number": _number, "_std": _std, "_zscore": _zscore,
        "_ratio_to_mean": _ratio_to_mean, "_speed": _speed, "HORIZON": horizon_s,
        "_cents_zscore": _cents_zscore, "_place": _place,
    }  # fmt: skip
    windows = sorted(
        {
            window_seconds(f.window, horizon_s)
            for f in defs.features
            if isinstance(f, WindowFeature)
        },
        reverse=True,
    )
    init: list[str] = []  # accumulators, per window w and field slot i
    update: dict[int, list[str]] = {w: [] for w in range(len(windows))}
    results: list[str] = []
    stats: list[str] = []  # per numeric accumulator, after the loop: its count and sum

    def numeric(field: str, expr: str) -> str:
        return expr if field == "amount" else f"_number({expr})"

    def accumulator(kind: str, w: int, i: int = -1) -> str:
        name = f"{kind}_{w}_{i}" if i >= 0 else f"{kind}_{w}"
        if any(line.startswith(f"{name} =") for line in init):
            return name
        field = kept[i] if i >= 0 else ""
        if kind == "cnt":
            init.append(f"{name} = 0")
            update[w].append(f"{name} += 1")
        elif kind == "xs":
            init.append(f"{name} = []")
            value = numeric(field, f"e_{i}")
            if field == "amount":  # kept in cents
                update[w].append(f"{name}.append(e_{i} / 100.0)")
            else:
                update[w].append(f"x = {value}")
                update[w].append(f"if x is not None: {name}.append(x)")
        elif kind == "cents":  # the amount's sum, in integer cents
            init.append(f"{name} = 0")
            update[w].append(f"{name} += e_{i}")
        elif kind == "squares":  # ... and its sum of squares
            init.append(f"{name} = 0")
            update[w].append(f"{name} += e_{i} * e_{i}")
        elif kind == "seen":
            init.append(f"{name} = False")
            update[w].append(f"if e_{i} == o_{i}: {name} = True")
        elif kind == "vals":
            init.append(f"{name} = set()")
            update[w].append(f"{name}.add(e_{i})")
        return name

    for k, f in enumerate(defs.features):
        if isinstance(f, FieldFeature):
            # The decoder guarantees a finite amount; every other field may be missing.
            read = _access(f.field)
            results.append(read if f.field == "amount" else f"_field({read}, {f.default!r})")
        elif isinstance(f, HourOfDay):
            results.append("float(tx.timestamp.hour)")
        elif isinstance(f, DayOfWeek):
            results.append("float(tx.timestamp.weekday())")
        elif isinstance(f, InFeature):
            namespace[f"VALUES_{k}"] = frozenset(f.values)
            results.append(f"(1.0 if {_access(f.field)} in VALUES_{k} else 0.0)")
        elif isinstance(f, TravelSpeed):
            results.append("_speed(ts, o_lat, o_lon, last)")
        else:
            assert isinstance(f, WindowFeature)
            w = windows.index(window_seconds(f.window, horizon_s))
            i = slot[f.of] if f.of else -1
            own_num = numeric(f.of, f"o_{i}") if f.of else ""
            agg = f.agg
            if agg == "count":
                results.append(f"float({accumulator('cnt', w)})")
            elif agg == "time_since_last":
                results.append("(HORIZON if last is None else max(ts - last[0], 0.0))")
            elif agg == "changed":
                results.append(f"(0.0 if last is None else float(last[{i + 1}] != o_{i}))")
            elif agg in ("seen_before", "new_value"):
                hit = accumulator("seen", w, i)
                results.append(f"(1.0 if {hit} else 0.0)" if agg == "seen_before"
                               else f"(0.0 if {hit} else 1.0)")  # fmt: skip
            elif agg == "distinct":
                results.append(f"float(len({accumulator('vals', w, i)}))")
            elif f.of == "amount" and agg in ("sum", "mean", "zscore", "ratio_to_mean"):
                # Money is exact in integer cents (as in v1): running sums leave no residue,
                # and the spread needs no second pass.
                # Every event has an amount: the window's count is the number of values.
                n, total = accumulator("cnt", w), accumulator("cents", w, i)
                if agg == "zscore":
                    squares = accumulator("squares", w, i)
                    results.append(f"_cents_zscore(o_{i}, {n}, {total}, {squares})")
                else:
                    results.append(
                        {
                            "sum": f"({total} / 100.0)",
                            "mean": f"({total} / {n} / 100.0 if {n} else 0.0)",
                            "ratio_to_mean": f"_ratio_to_mean(o_{i}, {n}, {total})",
                        }[agg]
                    )
            else:
                xs = accumulator("xs", w, i)
                n, total = f"n{xs[2:]}", f"s{xs[2:]}"
                if f"{n} = len({xs})" not in stats:
                    stats += [f"{n} = len({xs})", f"{total} = sum({xs})"]
                results.append(
                    {
                        "sum": f"float({total})",
                        "mean": f"({total} / {n} if {n} else 0.0)",
                        "min": f"(min({xs}) if {n} else 0.0)",
                        "max": f"(max({xs}) if {n} else 0.0)",
                        "std": f"_std({xs})",
                        "zscore": f"_zscore({own_num}, {xs}, {n}, {total})",
                        "ratio_to_mean": f"_ratio_to_mean({own_num}, {n}, {total})",
                    }[agg]
                )
    namespace["_field"] = lambda value, default: default if (v := _number(value)) is None else v
    place = any(isinstance(f, TravelSpeed) for f in defs.features)
    fields = [f"_{i}" for i in range(len(kept))] + (["_lat", "_lon"] if place else [])
    lines = ["def row(tx, ts, event, events):"]
    lines += ["    last = events[-1] if events else None"]
    lines += ["    " + "".join(f"o{f}, " for f in ["_ts", *fields]) + "= event"]
    lines += [f"    {line}" for line in init]
    lines += [f"    b_{w} = ts - {span!r}" for w, span in enumerate(windows) if span < horizon_s]
    if any(update.values()):
        lines.append("    for " + "".join(f"e{f}, " for f in ["_ts", *fields]) + "in events:")
        depth = 2
        for w, span in enumerate(windows):  # widest first: a narrower window is inside it
            if span < horizon_s:  # ``horizon`` is every event kept, late ones included
                lines.append("    " * depth + f"if e_ts > b_{w}:")
                depth += 1
            lines += ["    " * depth + line for line in update[w]] or ["    " * depth + "pass"]
    lines += [f"    {line}" for line in stats]
    lines.append("    return [" + ", ".join(results) + "]")
    values = ["ts", *("round(tx.amount * 100.0)" if f == "amount" else _access(f) for f in kept)]
    lines += ["", "def event(tx, ts):"]
    if place:
        lines.append("    lat, lon = _place(tx)")
        values += ["lat", "lon"]
    lines.append("    return (" + "".join(f"{v}, " for v in values) + ")")
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<feature set>", "exec"), namespace)  # noqa: S102 - our own source
    return source, namespace["row"], namespace["event"]
