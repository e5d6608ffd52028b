"""Features of the entity stage: windows per any entity (merchant, device, IP, an attribute)
and label feedback (docs/features.md, "The entity stage").

The input is keyed by user, so a merchant's transactions are spread over every partition; the
entity stage repartitions them by the entity's value and folds them into an
:class:`EntityAggregator`, which publishes each key's values to a table the scorers join
(:class:`JoinedEngine`). Training replays the same aggregator point-in-time
(:func:`point_in_time_rows`), so serving and training share the code as well as the
definitions.

A key's values are a function of the *set* of its events the aggregator holds: transactions are
kept sorted by (time, id) and deduplicated by id, frauds by transaction id, and every window is
anchored at ``as_of``, the newest event time folded in. Arrival order does not matter, so a
replay after a restart or rebalance, or training's time-ordered pass, reproduces the values an
uninterrupted stage published. What a scorer reads may lag the newest events by the stage's
*freshness* (measured in docs/features.md).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any, Final, Protocol

import msgspec

from fraud_scorer.contract import Transaction
from fraud_scorer.feature_defs import (
    FeatureSetDef,
    LabelFeature,
    StagedFeature,
    WindowFeature,
    window_seconds,
)

# A routed record's key and a table row's key: the entity, "=", its value.
SEP: Final = "="


def table_key(entity: str, key: str) -> str:
    return f"{entity}{SEP}{key}"


def entity_value(tx: Transaction, entity: str) -> str | None:
    """The transaction's key for ``entity`` (a contract field or ``attributes.<key>``); None
    when it has none (the entity's features then take their defaults)."""
    if entity.startswith("attributes."):
        value: Any = tx.attributes.get(entity.removeprefix("attributes."))
    else:
        value = getattr(tx, entity)
    if value is None or value == "" or isinstance(value, bool):
        return None
    return value if isinstance(value, str) else repr(value)


def _field(tx: Transaction, field: str) -> Any:
    if field.startswith("attributes."):
        return tx.attributes.get(field.removeprefix("attributes."))
    return getattr(tx, field)


class EntityValues(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One key's row in the entity table, as published (compact: a JSON array)."""

    set_version: str
    as_of: float  # the newest event time folded in (transaction or label)
    last_ts: float  # the newest transaction's time (0: none)
    values: tuple[float, ...]  # the entity's features in plan order (time_since_last: 0)
    last_tx: str = ""  # the newest transaction's id

    def joined(self) -> JoinRow:
        return (self.as_of, self.last_ts if self.last_tx else 0.0, *self.values)


# A row as a join reads it: (as_of, the newest transaction's time or 0 without one, values...).
# A scorer holds one per key of the table, a million of them for a million devices: a tuple of
# floats is about half the memory of the published struct with its two strings.
JoinRow = tuple[float, ...]


@dataclass(frozen=True)
class _Slot:
    """One staged feature: where it goes in the set's row, and how it is computed."""

    index: int
    feature: StagedFeature
    window_s: float
    delay_s: float
    column: int = -1  # where the aggregated field sits in a stored event (ts, id, fields...)


@dataclass(frozen=True)
class StagePlan:
    """Which features of a set the stage computes, grouped by entity."""

    version: str
    horizon_s: float  # how far back a key's transactions are kept
    history_s: float  # the set's horizon (``time_since_last`` without an event)
    max_events: int
    slots: dict[str, tuple[_Slot, ...]]  # entity -> its features
    fields: dict[str, tuple[str, ...]]  # entity -> the fields its features aggregate

    @classmethod
    def of(cls, defs: FeatureSetDef) -> StagePlan:
        history = defs.history_hours * 3600.0
        index = {f.name: i for i, f in enumerate(defs.features)}
        slots: dict[str, list[_Slot]] = {}
        for f in defs.staged():
            slots.setdefault(f.entity, []).append(
                _Slot(
                    index[f.name],
                    f,
                    window_seconds(f.window, history),
                    window_seconds(f.delay or "0s", history),
                )
            )
        fields = {
            entity: tuple(sorted({s.feature.of for s in group
                                  if isinstance(s.feature, WindowFeature) and s.feature.of}))
            for entity, group in slots.items()
        }  # fmt: skip
        for entity, group in slots.items():
            for k, slot in enumerate(group):
                of = getattr(slot.feature, "of", None)
                if of is not None:
                    group[k] = replace(slot, column=2 + fields[entity].index(of))
        return cls(
            defs.version,
            defs.stage_horizon_s(),
            history,
            defs.stage_max_events_per_entity,
            {entity: tuple(group) for entity, group in slots.items()},
            fields,
        )

    def fields_of(self, entity: str, tx: Transaction) -> tuple[Any, ...]:
        """The values of the fields ``entity``'s features aggregate, from ``tx``."""
        return tuple(_field(tx, f) for f in self.fields[entity])

    def default(self, entity: str) -> tuple[float, ...]:
        """Values of a key the stage has never seen: no events, no frauds."""
        return tuple(0.0 for _ in self.slots[entity])


class _Key:
    __slots__ = ("as_of", "events", "frauds", "ids", "times")

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []  # (ts, tx_id, *field values), sorted
        self.times: list[float] = []  # each event's ts, for bisection
        self.ids: set[str] = set()
        self.frauds: dict[str, float] = {}  # tx_id -> tx time, of verdicts "fraud"
        self.as_of = -math.inf


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _population_std(xs: list[float]) -> float:
    n = len(xs)
    if n < 2 or min(xs) == max(xs):
        return 0.0
    mean = math.fsum(xs) / n
    return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / n)


class EntityAggregator:
    """The stage's state: per entity and key, its recent transactions and frauds, and the
    values of the entity's features (see the module's docstring for why they do not depend
    on arrival order)."""

    def __init__(self, plan: StagePlan) -> None:
        self.plan = plan
        self.keys: dict[str, dict[str, _Key]] = {entity: {} for entity in plan.slots}

    def add_transaction(
        self, tx: Transaction, ts: float, only: str | None = None
    ) -> list[tuple[str, str]]:
        """Fold a transaction in (for every entity, or ``only`` one: the stage routes a copy
        per entity); returns the (entity, key)s whose values changed."""
        touched = []
        for entity in self.plan.fields:
            if only is not None and entity != only:
                continue
            key = entity_value(tx, entity)
            if key is not None and self.add(
                entity, key, tx.transaction_id, ts, self.plan.fields_of(entity, tx)
            ):
                touched.append((entity, key))
        return touched

    def add(self, entity: str, key: str, tx_id: str, ts: float, values: tuple[Any, ...]) -> bool:
        """Fold one transaction into one key (``values``: of the entity's fields, as
        :meth:`StagePlan.fields_of` reads them); False when it changes nothing."""
        state = self._state(entity, key)
        if tx_id in state.ids or ts <= state.as_of - self.plan.horizon_s:
            return False  # a duplicate (at-least-once redelivery), or too old to matter
        event = (ts, tx_id, *values)
        at = bisect_right(state.times, ts)
        while at > 0 and state.times[at - 1] == ts and state.events[at - 1][1] > tx_id:
            at -= 1  # equal times: ordered by id, whatever the arrival order
        state.events.insert(at, event)
        state.times.insert(at, ts)
        state.ids.add(tx_id)
        state.as_of = max(state.as_of, ts)
        self._evict(state)
        return True

    def add_label(
        self, tx: Transaction, tx_ts: float, is_fraud: bool, at: float, only: str | None = None
    ) -> list[tuple[str, str]]:
        """Fold an analyst's verdict on ``tx`` in, known from ``at``; the latest verdict on a
        transaction wins."""
        touched = []
        for entity in self.plan.slots:
            if only is not None and entity != only:
                continue
            key = entity_value(tx, entity)
            if key is None:
                continue
            state = self._state(entity, key)
            if is_fraud:
                state.frauds[tx.transaction_id] = tx_ts
            else:
                state.frauds.pop(tx.transaction_id, None)
            state.as_of = max(state.as_of, at)
            self._evict(state)
            touched.append((entity, key))
        return touched

    def values(self, entity: str, key: str) -> EntityValues | None:
        state = self.keys[entity].get(key)
        if state is None:
            return None
        out = []
        times, events, now = state.times, state.events, state.as_of
        for slot in self.plan.slots[entity]:
            f = slot.feature
            hi = now - slot.delay_s
            lo = hi - slot.window_s
            i, j = bisect_right(times, lo), bisect_right(times, hi)
            if isinstance(f, LabelFeature):
                frauds = sum(1 for t in state.frauds.values() if lo < t <= hi)
                if f.agg == "fraud_count":
                    out.append(float(frauds))
                else:
                    out.append(frauds / max(j - i, frauds) if frauds else 0.0)
                continue
            agg = f.agg
            if agg == "count":
                out.append(float(j - i))
            elif agg == "time_since_last":
                out.append(0.0)  # filled in at the join, from last_ts
            elif agg == "distinct":
                k = slot.column
                out.append(float(len({e[k] for e in events[i:j] if e[k] is not None})))
            else:
                k = slot.column
                xs = [x for e in events[i:j] if (x := _number(e[k])) is not None]
                out.append(_numeric(agg, xs))
        last = events[-1] if events else None
        return EntityValues(
            self.plan.version,
            now,
            last[0] if last else 0.0,
            tuple(out),
            last[1] if last else "",
        )

    def rows_of(self, entity: str) -> Rows:
        """:data:`Lookup` over this aggregator: what training's replay joins."""
        return _AggregatedRows(self, entity)

    def key_count(self) -> int:
        return sum(len(keys) for keys in self.keys.values())

    def expire_idle(self, watermark: float) -> list[tuple[str, str]]:
        """Forget keys idle for longer than the horizon: a join already reads them as
        defaults (:class:`JoinedEngine`). Returns them (the stage deletes their table rows)."""
        dropped = []
        cutoff = watermark - self.plan.horizon_s
        for entity, keys in self.keys.items():
            stale = [k for k, s in keys.items() if s.as_of < cutoff]
            for k in stale:
                del keys[k]
            dropped += [(entity, k) for k in stale]
        return dropped

    def _state(self, entity: str, key: str) -> _Key:
        keys = self.keys[entity]
        state = keys.get(key)
        if state is None:
            state = keys[key] = _Key()
        return state

    def _evict(self, state: _Key) -> None:
        cut = bisect_right(state.times, state.as_of - self.plan.horizon_s)
        cut = max(cut, len(state.events) - self.plan.max_events)
        if cut > 0:
            for e in state.events[:cut]:
                state.ids.discard(e[1])
            del state.events[:cut], state.times[:cut]
        old = state.as_of - self.plan.horizon_s
        if state.frauds and min(state.frauds.values()) <= old:
            state.frauds = {k: t for k, t in state.frauds.items() if t > old}


def _numeric(agg: str, xs: list[float]) -> float:
    if not xs:
        return 0.0
    if agg == "sum":
        return math.fsum(xs)
    if agg == "mean":
        return math.fsum(xs) / len(xs)
    if agg == "std":
        return _population_std(xs)
    if agg == "min":
        return min(xs)
    if agg == "max":
        return max(xs)
    raise AssertionError(f"aggregation {agg!r} is not staged")  # refused by the definitions


@dataclass(frozen=True)
class _AggregatedRows:
    aggregator: EntityAggregator
    entity: str

    def get(self, key: str) -> JoinRow | None:
        found = self.aggregator.values(self.entity, key)
        return None if found is None else found.joined()


class UserEngine(Protocol):
    @property
    def horizon_s(self) -> float: ...
    @property
    def watermark(self) -> float: ...

    def compute(self, partition: int, tx: Transaction, ts: float) -> list[float]: ...
    def drop_partition(self, partition: int) -> None: ...
    def expire_idle(self) -> int: ...
    def user_count(self) -> int: ...


class Rows(Protocol):
    """One entity's rows of the table, as a join reads them (a scorer's
    :class:`~fraud_scorer.entity_table.EntityRows`, or training's replay of the stage)."""

    def get(self, key: str) -> JoinRow | None: ...


# The entity table as a join reads it: an entity's rows.
Lookup = Callable[[str], Rows]


@dataclass(frozen=True)
class EntityJoin:
    """How one entity's values join a row: the transaction's key, the entity's rows, the
    values of a key without a (fresh) row, and which of them are ``time_since_last``."""

    entity: str
    key_of: Callable[[Transaction], str | None]
    rows: Rows
    defaults: tuple[float, ...]
    since: tuple[int, ...]


def _key_reader(entity: str) -> Callable[[Transaction], str | None]:
    """The transaction's key for ``entity``, read without re-parsing the name per row (text
    contract fields are the common case: the field itself, whose "" no table row has, as the
    stage never routes it)."""
    if entity in ("user_id", "currency", "merchant", "merchant_category", "channel",
                  "location", "device_id"):  # fmt: skip
        return attrgetter(entity)  # type: ignore[no-any-return]
    return lambda tx: entity_value(tx, entity)


class JoinedEngine:
    """A feature engine for a set with staged features: the scorer's own per-user engine
    computes the rest, and each staged value comes from the entity table (``lookup``), as
    published by the stage. A staged value is as of the key's newest event (its windows end
    there, not at this transaction: ``time_since_last`` says how long ago that was), and
    training reads it the same way. A key the table lacks, or idle for longer than the
    horizon, takes the defaults (no events). :mod:`fraud_scorer.feature_batch` joins a whole
    batch at once with the same values; :meth:`compute` is the row-by-row form (training's
    point-in-time replay, state rebuild)."""

    def __init__(
        self,
        defs: FeatureSetDef,
        user_engine: UserEngine,
        user_names: Sequence[str],
        lookup: Lookup,
    ) -> None:
        self.user = user_engine
        self.plan = p = StagePlan.of(defs)
        # A row is built as the user engine's values, then each entity's values in plan order
        # (one list extension per entity: measured 3x faster than placing every value by
        # index), then put in the set's order by one permutation, when that is not already it.
        index = {f.name: i for i, f in enumerate(defs.features)}
        built = [index[name] for name in user_names]
        self.joins: list[EntityJoin] = []
        for entity, slots in p.slots.items():
            built += [s.index for s in slots]
            since = tuple(k for k, s in enumerate(slots)
                          if isinstance(s.feature, WindowFeature)
                          and s.feature.agg == "time_since_last")  # fmt: skip
            defaults = tuple(p.history_s if k in since else 0.0 for k in range(len(slots)))
            self.joins.append(
                EntityJoin(entity, _key_reader(entity), lookup(entity), defaults, since)
            )
        position = {i: k for k, i in enumerate(built)}
        # The permutation from the built row to the set's order (empty: already in order).
        self.order = [position[i] for i in range(len(defs.features))]
        if self.order == list(range(len(defs.features))):
            self.order = []

    @property
    def horizon_s(self) -> float:
        return self.user.horizon_s

    @property
    def watermark(self) -> float:
        return self.user.watermark

    def drop_partition(self, partition: int) -> None:
        self.user.drop_partition(partition)

    def expire_idle(self) -> int:
        return self.user.expire_idle()

    def user_count(self) -> int:
        return self.user.user_count()

    def compute(self, partition: int, tx: Transaction, ts: float) -> list[float]:
        row = self.user.compute(partition, tx, ts)  # a new list per call: extended in place
        horizon, history = self.plan.horizon_s, self.plan.history_s
        for join in self.joins:
            key, since = join.key_of(tx), join.since
            found = join.rows.get(key) if key is not None else None
            # The table holds only rows of this set (EntityTable drops others); an idle key
            # reads as never seen.
            if found is None or ts - found[0] > horizon:
                row += join.defaults
            elif since:
                values = list(found[2:])
                for k in since:
                    values[k] = max(ts - found[1], 0.0) if found[1] else history
                row += values
            else:
                row += found[2:]
        if self.order:
            return [row[k] for k in self.order]
        return row


@dataclass(frozen=True)
class LabelEvent:
    """A verdict for training's point-in-time replay: on the ``row``-th transaction, known
    from ``at``."""

    row: int
    is_fraud: bool
    at: float


_TX: Final = 0
_LABEL: Final = 1


def point_in_time_rows(
    defs: FeatureSetDef,
    transactions: Sequence[tuple[Transaction, float]],
    labels: Iterable[LabelEvent],
    make_engine: Callable[[Lookup], UserEngine],
    progress: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """Each transaction's row (in the given order) as a scorer joined with an up-to-date stage
    would compute it: staged values from every transaction before it and every verdict known by
    then (in time order; a verdict at the same time as a transaction comes after it)."""
    aggregator = EntityAggregator(StagePlan.of(defs))

    engine = make_engine(aggregator.rows_of)  # the scorer's engine, joined with this replay
    timeline = [(ts, _TX, i) for i, (_, ts) in enumerate(transactions)]
    verdicts: dict[int, LabelEvent] = {}
    for label in labels:
        timeline.append((label.at, _LABEL, len(verdicts)))
        verdicts[len(verdicts)] = label
    timeline.sort()
    rows: list[list[float]] = [[] for _ in transactions]
    done = 0
    for _, kind, i in timeline:
        if kind == _TX:
            tx, ts = transactions[i]
            rows[i] = engine.compute(0, tx, ts)
            aggregator.add_transaction(tx, ts)
            done += 1
            if progress is not None and done % 10_000 == 0:
                progress(done)
        else:
            label = verdicts[i]
            tx, ts = transactions[label.row]
            aggregator.add_label(tx, ts, label.is_fraud, label.at)
    return rows
