"""Per-user feature state and the features computed from it.

Every feature is a function of the user's own events inside a bounded *history horizon*
(``history_hours``, at most ``max_events_per_user`` of them) that precede the current one in
partition order. That bound is what makes state rebuildable: replaying the partition's recent
messages after a restart or rebalance reproduces exactly the state an uninterrupted process
would hold, so features (and decisions) do not depend on where a consumer started.

Amounts are kept as integer cents so running sums are exact: adding and later evicting an event
leaves no floating-point residue that a replay would not reproduce.

Training imports this module and replays its transactions through the same engine, so serving
and training compute identical features.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

from fraud_scorer.contract import Transaction
from fraud_scorer.geo import COUNTRY_CENTROIDS

FEATURE_SET_VERSION: Final = "v1"

CelType = Literal["double", "int", "bool"]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    cel_type: CelType
    doc: str


FEATURES: Final = (
    FeatureSpec("amount", "double", "transaction amount in its currency"),
    FeatureSpec("hour_of_day", "int", "hour of the event in the timestamp's own offset"),
    FeatureSpec("card_not_present", "bool", "channel is online, app or mail/phone order"),
    FeatureSpec("history_count", "int", "user's events in the history horizon"),
    FeatureSpec("tx_count_1h", "int", "user's events in the hour before this one"),
    FeatureSpec("tx_count_24h", "int", "user's events in the 24 hours before this one"),
    FeatureSpec("amount_sum_24h", "double", "sum of the user's amounts in the previous 24 h"),
    FeatureSpec("amount_zscore", "double", "amount against the user's history (0 if < 2 events)"),
    FeatureSpec("amount_to_mean", "double", "amount / user's mean amount (1 if no history)"),
    FeatureSpec(
        "seconds_since_last", "double", "since the user's previous event (horizon if none)"
    ),
    FeatureSpec("location_changed", "bool", "country differs from the previous event's"),
    FeatureSpec("travel_speed_kmh", "double", "implied speed from the previous event's place"),
    FeatureSpec("device_seen_before", "bool", "device used by this user in the horizon"),
    FeatureSpec("merchant_category_new", "bool", "first event in this merchant category"),
)
FEATURE_NAMES: Final = tuple(f.name for f in FEATURES)
FEATURE_INDEX: Final = {name: i for i, name in enumerate(FEATURE_NAMES)}

# The features of the event alone come first, then those of the user's history, whose values
# for a user's first event are these: no counts, neutral ratios, "last seen" one horizon ago
# (filled in per engine), nothing seen before, everything new.
_EVENT_FEATURES: Final = ("amount", "hour_of_day", "card_not_present")
_FIRST_EVENT: Final[dict[str, float | None]] = {
    "history_count": 0.0,
    "tx_count_1h": 0.0,
    "tx_count_24h": 0.0,
    "amount_sum_24h": 0.0,
    "amount_zscore": 0.0,
    "amount_to_mean": 1.0,
    "seconds_since_last": None,  # the horizon
    "location_changed": 0.0,
    "travel_speed_kmh": 0.0,
    "device_seen_before": 0.0,
    "merchant_category_new": 1.0,
}
if (*_EVENT_FEATURES, *_FIRST_EVENT) != FEATURE_NAMES:  # pragma: no cover - a coding error
    raise AssertionError("_EVENT_FEATURES + _FIRST_EVENT must list FEATURES in order")

_CARD_NOT_PRESENT: Final = frozenset({"online", "app", "moto", "ecommerce", "web"})
_EARTH_RADIUS_KM: Final = 6371.0
_MIN_TRAVEL_HOURS: Final = 1.0 / 60.0
_EXPIRY_MARGIN_S: Final = 3600.0


# An event kept in state. The hot path unpacks it into these names (``ts, cents, country, lat,
# lon, device, category = event``), which is as fast as indexing; a NamedTuple would name the
# fields too but costs 4% of the feature engine to construct (`bench/feature_engine_ab.py`, an
# offline yardstick). Cold paths index with the names below.
Event = tuple[float, int, str, float, float, str, str]
_TS: Final = 0  # epoch seconds
_CENTS: Final = 1  # amount in integer cents


class UserState:
    __slots__ = ("cents_sq_sum", "cents_sum", "events")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cents_sum = 0
        self.cents_sq_sum = 0


_NO_PLACE: Final = (math.nan, math.nan)


def _place(tx: Transaction) -> tuple[float, float]:
    if tx.lat is not None and tx.lon is not None:
        return tx.lat, tx.lon
    return COUNTRY_CENTROIDS.get(tx.location, _NO_PLACE)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


class _Events(Protocol):
    events: list[Any]  # oldest first; each event's first item is its time (epoch seconds)


S = TypeVar("S", bound=_Events)


class EntityStates(Generic[S]):
    """What every feature engine keeps: per partition, per entity key, a state whose events
    are bounded by the horizon; and the newest event time seen (the watermark)."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self.partitions: dict[int, dict[str, S]] = {}
        self.watermark = -math.inf

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition's entities: its new owner rebuilds them by replay."""
        self.partitions.pop(partition, None)

    def expire_idle(self) -> int:
        """Drop entities with no event inside the horizon (plus a margin for late events)."""
        cutoff = self.watermark - self.horizon_s - _EXPIRY_MARGIN_S
        dropped = 0
        for entities in self.partitions.values():
            stale = [key for key, st in entities.items() if st.events[-1][_TS] <= cutoff]
            for key in stale:
                del entities[key]
            dropped += len(stale)
        return dropped

    def user_count(self) -> int:
        return sum(len(entities) for entities in self.partitions.values())


class FeatureEngine(EntityStates[UserState]):
    """Per-partition, per-user state. ``compute`` returns the feature vector of one event
    (ordered as :data:`FEATURE_NAMES`) and then folds the event into the user's state."""

    def __init__(self, history_hours: float = 168.0, max_events_per_user: int = 64) -> None:
        super().__init__(history_hours * 3600.0)
        self.max_events = max_events_per_user
        self._no_history = [
            self.horizon_s if value is None else value for value in _FIRST_EVENT.values()
        ]

    def compute(self, partition: int, tx: Transaction, ts: float) -> list[float]:
        users = self.partitions.get(partition)
        if users is None:
            users = self.partitions[partition] = {}
        state = users.get(tx.user_id)
        if state is None:
            state = users[tx.user_id] = UserState()
        self.watermark = max(self.watermark, ts)
        events = state.events
        if events and events[0][_TS] <= ts - self.horizon_s:  # checked inline: the hot path
            self._evict_before(state, ts - self.horizon_s)

        amount = tx.amount
        cents = round(amount * 100.0)
        country = sys.intern(tx.location)
        category = sys.intern(tx.merchant_category)
        device = tx.device_id
        lat, lon = tx.lat, tx.lon
        if lat is None or lon is None:
            lat, lon = COUNTRY_CENTROIDS.get(country, _NO_PLACE)
        n = len(events)
        if n:
            last_ts, _, last_country, last_lat, last_lon, _, _ = events[-1]
            seconds_since_last = max(ts - last_ts, 0.0)
            t1h, t24h = ts - 3600.0, ts - 86400.0
            c1h = c24h = s24h = 0
            device_seen_before, merchant_category_new = 0.0, 1.0
            for e_ts, e_cents, _, _, _, e_device, e_category in events:
                if e_ts > t24h:
                    c24h += 1
                    s24h += e_cents
                    if e_ts > t1h:
                        c1h += 1
                if e_device == device:
                    device_seen_before = 1.0
                if e_category == category:
                    merchant_category_new = 0.0
            mean = state.cents_sum / n
            var_num = n * state.cents_sq_sum - state.cents_sum * state.cents_sum
            zscore = (cents - mean) * n / math.sqrt(var_num) if n >= 2 and var_num > 0 else 0.0
            to_mean = cents / mean if mean > 0 else 1.0
            location_changed = 1.0 if last_country != country else 0.0
            if last_lat == lat and last_lon == lon:
                speed = 0.0
            else:
                speed = haversine_km(last_lat, last_lon, lat, lon) / max(
                    seconds_since_last / 3600.0, _MIN_TRAVEL_HOURS
                )
                if math.isnan(speed):
                    speed = 0.0
            # FEATURES' order: the event's, then _FIRST_EVENT's (checked at import).
            row = [
                amount,
                float(tx.timestamp.hour),  # hour_of_day
                1.0 if tx.channel in _CARD_NOT_PRESENT else 0.0,  # card_not_present
                float(n),  # history_count
                float(c1h),  # tx_count_1h
                float(c24h),  # tx_count_24h
                s24h / 100.0,  # amount_sum_24h
                zscore,  # amount_zscore
                to_mean,  # amount_to_mean
                seconds_since_last,
                location_changed,
                speed,  # travel_speed_kmh
                device_seen_before,
                merchant_category_new,
            ]
        else:
            row = [
                amount,
                float(tx.timestamp.hour),
                1.0 if tx.channel in _CARD_NOT_PRESENT else 0.0,
                *self._no_history,
            ]
        events.append((ts, cents, country, lat, lon, device, category))
        state.cents_sum += cents
        state.cents_sq_sum += cents * cents
        if n + 1 > self.max_events:
            self._drop_oldest(state, n + 1 - self.max_events)
        return row

    @staticmethod
    def _drop_oldest(state: UserState, count: int) -> None:
        for e in state.events[:count]:
            state.cents_sum -= e[_CENTS]
            state.cents_sq_sum -= e[_CENTS] * e[_CENTS]
        del state.events[:count]

    def _evict_before(self, state: UserState, horizon: float) -> None:
        events = state.events
        i = 0
        while i < len(events) and events[i][_TS] <= horizon:
            i += 1
        if i:
            self._drop_oldest(state, i)


def as_mapping(row: list[float]) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, row, strict=True))
