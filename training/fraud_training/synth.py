"""Seeded synthetic card transactions with labelled fraud scenarios, generated column-wise.

The world: users with a home country and city, one to three devices, a personal spending scale,
a few favourite merchant categories and an activity rate; merchants per (country, category) with
a place; daily and weekly rhythms. Genuine noise that looks suspicious but is not: trips abroad,
the occasional big purchase, a new phone.

Fraud scenarios (``label`` 1, named in ``scenario``):

- ``account_takeover``: a new device in a far-away country, a few high card-not-present
  payments minutes apart;
- ``card_testing``: a burst of tiny online payments from a new device, seconds apart, sometimes
  followed by one cash-out purchase;
- ``compromised_merchant``: a genuine merchant's terminal is compromised for a few days and
  cloned cards are charged there (often at night); or a shell merchant (``XYZ_Merchant``,
  ``UnknownShop``) that exists to cash out stolen cards;
- ``high_value``: one payment many times the user's usual spend, from the user's own device;
- ``friendly_fraud``: a genuine payment the cardholder later disputes - labelled fraud, looks
  genuine: label noise no model should be able to learn.

Everything is vectorised numpy drawn from one seeded generator: a million transactions take a
few seconds, and the same :class:`SynthConfig` always gives the same frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from fraud_scorer.geo import COUNTRY_CENTROIDS

from fraud_training.data import OPTIONAL, REQUIRED

HOME_COUNTRIES: Final = ("DE", "FR", "GB", "ES", "IT", "NL", "PL", "SE", "BE", "AT", "PT", "IE")
_HOME_WEIGHTS: Final = (16, 13, 13, 9, 9, 5, 6, 3, 3, 3, 3, 2)
FAR_COUNTRIES: Final = ("US", "BR", "NG", "RU", "CN", "IN", "ID", "MX", "ZA", "VN", "PH", "TR")
COUNTRIES: Final = HOME_COUNTRIES + FAR_COUNTRIES
# category: (median amount in EUR, probability that a payment is card-not-present)
CATEGORIES: Final = {
    "grocery": (35.0, 0.05),
    "restaurants": (28.0, 0.05),
    "fuel": (55.0, 0.0),
    "apparel": (70.0, 0.4),
    "electronics": (180.0, 0.5),
    "travel": (260.0, 0.7),
    "entertainment": (25.0, 0.6),
    "health": (40.0, 0.1),
    "utilities": (80.0, 0.9),
    "online_services": (15.0, 1.0),
}
CATEGORY_NAMES: Final = tuple(CATEGORIES)
SHELL_MERCHANTS: Final = ("XYZ_Merchant", "UnknownShop")
FRAUD_SCENARIOS: Final = (
    "account_takeover",
    "card_testing",
    "compromised_merchant",
    "high_value",
    "friendly_fraud",
)
SCENARIOS: Final = ("genuine", *FRAUD_SCENARIOS)
CHANNELS: Final = ("pos", "online", "app")
# The transaction contract's columns, then where, and the truth: label and scenario.
COLUMNS: Final = (*REQUIRED, *OPTIONAL, "label", "scenario")

# Relative weight of each hour of the day, and of each weekday (Monday first), for genuine use.
_HOURLY: Final = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 3.5, 4, 4.5, 5, 4.5, 4, 4, 4.5, 5, 5.5, 5, 4, 3, 2, 1.5]
)
_WEEKDAY: Final = np.array([0.9, 0.9, 0.95, 1.0, 1.15, 1.3, 0.8])
_CAT_MEDIAN: Final = np.array([m for m, _ in CATEGORIES.values()])
_CAT_CNP: Final = np.array([c for _, c in CATEGORIES.values()])
_CENTROIDS: Final = np.array([COUNTRY_CENTROIDS[c] for c in COUNTRIES])
_CAT = {name: i for i, name in enumerate(CATEGORY_NAMES)}
_SCENARIO = {name: i for i, name in enumerate(SCENARIOS)}
_DAY_S: Final = 86400.0


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Fraud rates are per user over the whole period (``*_share``), per day
    (compromised merchants, scaled by ``users``) or per genuine payment (friendly fraud)."""

    users: int = 5000
    days: float = 7.0
    start: datetime = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
    tx_per_user_per_day: float = 2.5
    fraud_users_share: float = 0.02  # taken-over, card-tested or high-value victims
    compromised_merchants_per_day_per_10k_users: float = 0.6
    friendly_fraud_share: float = 0.0004
    travel_share: float = 0.05  # users who travel during the period
    seed: int = 7


# Split of ``fraud_users_share`` between the per-user scenarios.
_USER_SCENARIO_WEIGHTS: Final = {"account_takeover": 0.45, "card_testing": 0.35, "high_value": 0.2}


class _Parts:
    """Column chunks from each scenario, concatenated once at the end."""

    def __init__(self) -> None:
        self.cols: dict[str, list[npt.NDArray[Any]]] = {}

    def add(self, **cols: npt.NDArray[Any]) -> None:
        for name, values in cols.items():
            self.cols.setdefault(name, []).append(values)

    def concat(self) -> dict[str, npt.NDArray[Any]]:
        return {name: np.concatenate(chunks) for name, chunks in self.cols.items()}


@dataclass
class _World:
    home: npt.NDArray[np.int64]
    home_lat: npt.NDArray[np.float64]
    home_lon: npt.NDArray[np.float64]
    devices: npt.NDArray[np.int64]
    scale: npt.NDArray[np.float64]
    rate: npt.NDArray[np.float64]
    cats: npt.NDArray[np.int64]  # users x categories, favourites first
    n_cats: npt.NDArray[np.int64]
    per_cell: int  # merchants per (country, category)
    merchant_lat: npt.NDArray[np.float64]  # countries x categories x per_cell
    merchant_lon: npt.NDArray[np.float64]


def _world(rng: np.random.Generator, cfg: SynthConfig) -> _World:
    n = cfg.users
    weights = np.array(_HOME_WEIGHTS, dtype=float)
    home = rng.choice(len(HOME_COUNTRIES), n, p=weights / weights.sum())
    per_cell = max(3, round(n / (len(HOME_COUNTRIES) * len(CATEGORIES) * 6)))
    shape = (len(COUNTRIES), len(CATEGORIES), per_cell)
    return _World(
        home=home,
        home_lat=_CENTROIDS[home, 0] + rng.normal(0.0, 1.0, n),
        home_lon=_CENTROIDS[home, 1] + rng.normal(0.0, 1.5, n),
        devices=rng.integers(1, 4, n),
        scale=np.exp(rng.normal(0.0, 0.45, n)),
        rate=cfg.tx_per_user_per_day * np.exp(rng.normal(0.0, 0.5, n)),
        cats=np.argsort(rng.random((n, len(CATEGORIES))), axis=1),
        n_cats=rng.integers(3, 7, n),
        per_cell=per_cell,
        merchant_lat=_CENTROIDS[:, 0, None, None] + rng.normal(0.0, 1.0, shape),
        merchant_lon=_CENTROIDS[:, 1, None, None] + rng.normal(0.0, 1.5, shape),
    )


def _times(rng: np.random.Generator, cfg: SynthConfig, n: int) -> npt.NDArray[np.float64]:
    """``n`` genuine event times (seconds since the start) with daily and weekly rhythms."""
    days = int(np.ceil(cfg.days))
    weekday = (cfg.start.weekday() + np.arange(days)) % 7
    day_w = _WEEKDAY[weekday]
    day = rng.choice(days, n, p=day_w / day_w.sum())
    hour = rng.choice(24, n, p=_HOURLY / _HOURLY.sum())
    out: npt.NDArray[np.float64] = day * _DAY_S + (hour + rng.random(n)) * 3600.0
    return out


def _merchant_names(
    country: npt.NDArray[np.int64], cat: npt.NDArray[np.int64], slot: npt.NDArray[np.int64]
) -> npt.NDArray[np.object_]:
    return np.array(
        [
            f"{CATEGORY_NAMES[k]}-{COUNTRIES[c]}-{s}"
            for c, k, s in zip(country.tolist(), cat.tolist(), slot.tolist(), strict=True)
        ],
        dtype=object,
    )


def _user_devices(
    users: npt.NDArray[np.int64], slots: npt.NDArray[np.int64]
) -> npt.NDArray[np.object_]:
    return np.array(
        [f"d-{u}-{s}" for u, s in zip(users.tolist(), slots.tolist(), strict=True)], dtype=object
    )


def _distance_km(
    lat1: npt.NDArray[np.float64],
    lon1: npt.NDArray[np.float64],
    lat2: npt.NDArray[np.float64],
    lon2: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    )
    out: npt.NDArray[np.float64] = 2 * 6371.0 * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
    return out


@dataclass
class _Trips:
    """Some users spend a few days in another country (mostly a neighbour). Nobody pays while
    flying: no payments for the travel time, out and back, so trips are plausible speeds."""

    travels: npt.NDArray[np.bool_]
    start: npt.NDArray[np.float64]
    end: npt.NDArray[np.float64]
    flight_s: npt.NDArray[np.float64]
    country: npt.NDArray[np.int64]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]

    def in_flight(
        self, user: npt.NDArray[np.int64], t: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.bool_]:
        flight, start, end = self.flight_s[user], self.start[user], self.end[user]
        out = ((t >= start) & (t < start + flight)) | ((t >= end) & (t < end + flight))
        result: npt.NDArray[np.bool_] = self.travels[user] & out
        return result

    def away(
        self, user: npt.NDArray[np.int64], t: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.bool_]:
        arrived = t >= self.start[user] + self.flight_s[user]
        result: npt.NDArray[np.bool_] = self.travels[user] & arrived & (t < self.end[user])
        return result


def _trips(rng: np.random.Generator, cfg: SynthConfig, w: _World) -> _Trips:
    n = cfg.users
    start = rng.uniform(0.0, cfg.days, n) * _DAY_S
    far = rng.random(n) < 0.2
    country = np.where(
        far,
        len(HOME_COUNTRIES) + rng.integers(0, len(FAR_COUNTRIES), n),
        (w.home + rng.integers(1, len(HOME_COUNTRIES), n)) % len(HOME_COUNTRIES),
    )
    lat = _CENTROIDS[country, 0] + rng.normal(0.0, 1.0, n)
    lon = _CENTROIDS[country, 1] + rng.normal(0.0, 1.5, n)
    flight_s = _distance_km(w.home_lat, w.home_lon, lat, lon) / 800.0 * 3600.0 + 7200.0
    return _Trips(
        travels=rng.random(n) < cfg.travel_share,
        start=start,
        end=start + rng.uniform(2.0, 7.0, n) * _DAY_S,
        flight_s=flight_s,
        country=country,
        lat=lat,
        lon=lon,
    )


def _genuine(rng: np.random.Generator, cfg: SynthConfig, w: _World, parts: _Parts) -> None:
    counts = rng.poisson(w.rate * cfg.days)
    user = np.repeat(np.arange(cfg.users), counts)
    t = _times(rng, cfg, len(user))
    trips = _trips(rng, cfg, w)
    keep = (t < cfg.days * _DAY_S) & ~trips.in_flight(user, t)
    user, t = user[keep], t[keep]
    n = len(user)
    away = trips.away(user, t)
    cat = w.cats[user, (rng.random(n) * w.n_cats[user]).astype(np.int64)]
    amount = _CAT_MEDIAN[cat] * w.scale[user] * np.exp(rng.normal(0.0, 0.6, n))
    big = rng.random(n) < 0.003  # the occasional big, genuine purchase
    amount[big] *= rng.uniform(4.0, 10.0, int(big.sum()))
    online = rng.random(n) < _CAT_CNP[cat]
    channel = np.where(online, np.where(rng.random(n) < 0.3, 2, 1), 0)
    country = np.where(away, trips.country[user], w.home[user])
    slot = rng.integers(0, w.per_cell, n)
    # People pay near where they are: within a few kilometres of home or of the trip's city.
    lat = np.where(away, trips.lat[user], w.home_lat[user]) + rng.normal(0.0, 0.04, n)
    lon = np.where(away, trips.lon[user], w.home_lon[user]) + rng.normal(0.0, 0.06, n)

    device = _user_devices(user, (rng.random(n) * w.devices[user]).astype(np.int64))
    new_phone = np.flatnonzero(rng.random(n) < 0.005)
    device[new_phone] = [f"d-{u}-new" for u in user[new_phone].tolist()]
    disputed = rng.random(n) < cfg.friendly_fraud_share
    parts.add(
        user=user,
        t=t,
        amount=amount,
        cat=cat,
        channel=channel,
        country=country,
        lat=lat,
        lon=lon,
        merchant=_merchant_names(country, cat, slot),
        device=device,
        label=disputed.astype(np.int8),
        scenario=np.where(disputed, _SCENARIO["friendly_fraud"], _SCENARIO["genuine"]),
    )


def _events_per_victim(
    rng: np.random.Generator, victims: npt.NDArray[np.int64], low: int, high: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Each victim repeated for ``low..high`` events, and each event's index in its burst."""
    sizes = rng.integers(low, high + 1, len(victims))
    user = np.repeat(victims, sizes)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return user, np.arange(len(user)) - first


def _burst_times(
    rng: np.random.Generator,
    cfg: SynthConfig,
    index: npt.NDArray[np.int64],
    gap: tuple[float, float],
) -> npt.NDArray[np.float64]:
    """A random start per burst (``index`` 0 opens one), then gaps of ``gap`` seconds."""
    if len(index) == 0:
        return np.empty(0)
    opens = index == 0
    burst = np.cumsum(opens) - 1
    start = rng.uniform(0.02, 0.98, int(opens.sum())) * cfg.days * _DAY_S
    steps = rng.uniform(*gap, len(index))
    steps[opens] = 0.0
    within = np.cumsum(steps)
    within -= within[np.flatnonzero(opens)][burst]
    out: npt.NDArray[np.float64] = np.minimum(start[burst] + within, cfg.days * _DAY_S - 1.0)
    return out


def _user_fraud(rng: np.random.Generator, cfg: SynthConfig, w: _World, parts: _Parts) -> None:
    victims = np.flatnonzero(rng.random(cfg.users) < cfg.fraud_users_share)
    kinds = rng.choice(
        list(_USER_SCENARIO_WEIGHTS), len(victims), p=list(_USER_SCENARIO_WEIGHTS.values())
    )
    n_far = len(FAR_COUNTRIES)
    far_country = len(HOME_COUNTRIES) + rng.integers(0, n_far, cfg.users)

    # Account takeover: new device, far country, 1-4 high card-not-present payments.
    user, idx = _events_per_victim(rng, victims[kinds == "account_takeover"], 1, 4)
    n = len(user)
    t = _burst_times(rng, cfg, idx, (60.0, 1200.0))
    cat = rng.choice([_CAT["electronics"], _CAT["travel"], _CAT["apparel"]], n)
    country, slot = far_country[user], rng.integers(0, w.per_cell, n)
    _add_fraud(
        parts,
        w,
        "account_takeover",
        country=country,
        cat=cat,
        slot=slot,
        user=user,
        t=t,
        amount=_CAT_MEDIAN[cat] * w.scale[user] * rng.uniform(3.0, 10.0, n),
        channel=rng.choice([1, 2], n),
        device=np.array([f"d-ato-{u}" for u in user.tolist()], dtype=object),
    )

    # Card testing: 5-20 tiny online payments seconds apart, then maybe one cash-out purchase.
    tested = victims[kinds == "card_testing"]
    user, idx = _events_per_victim(rng, tested, 5, 20)
    n = len(user)
    t = _burst_times(rng, cfg, idx, (3.0, 90.0))
    cash_out = (np.append(user[1:] != user[:-1], True)) & (rng.random(n) < 0.4)
    cat = np.where(cash_out, _CAT["electronics"], _CAT["online_services"])
    amount = np.where(
        cash_out, _CAT_MEDIAN[cat] * rng.uniform(2.0, 6.0, n), rng.uniform(0.5, 3.0, n)
    )
    where = rng.choice(len(COUNTRIES), cfg.users)[user]
    slot = rng.integers(0, w.per_cell, n)
    _add_fraud(
        parts,
        w,
        "card_testing",
        country=where,
        cat=cat,
        slot=slot,
        user=user,
        t=t,
        amount=amount,
        channel=np.ones(n, np.int64),
        device=np.array([f"d-ct-{u}" for u in user.tolist()], dtype=object),
    )

    # High value: one payment 12-40x the user's scale, from the user's own device, at home.
    user = victims[kinds == "high_value"]
    n = len(user)
    cat = rng.choice([_CAT["electronics"], _CAT["travel"]], n)
    country, slot = w.home[user], rng.integers(0, w.per_cell, n)
    _add_fraud(
        parts,
        w,
        "high_value",
        country=country,
        cat=cat,
        slot=slot,
        user=user,
        t=rng.uniform(0.02, 0.98, n) * cfg.days * _DAY_S,
        amount=_CAT_MEDIAN[cat] * w.scale[user] * rng.uniform(12.0, 40.0, n),
        channel=rng.choice([0, 1], n),
        device=_user_devices(user, np.zeros(n, np.int64)),
    )


def _add_fraud(
    parts: _Parts,
    w: _World,
    scenario: str,
    *,
    country: npt.NDArray[np.int64],
    cat: npt.NDArray[np.int64],
    slot: npt.NDArray[np.int64],
    merchant: npt.NDArray[Any] | None = None,
    **cols: npt.NDArray[Any],
) -> None:
    """Rows of one fraud scenario at merchants given by (country, category, slot): their
    place and name (unless ``merchant`` says otherwise), label 1 and the scenario."""
    n = len(cat)
    parts.add(
        **cols,
        cat=cat,
        country=country,
        lat=w.merchant_lat[country, cat, slot],
        lon=w.merchant_lon[country, cat, slot],
        merchant=_merchant_names(country, cat, slot) if merchant is None else merchant,
        label=np.ones(n, np.int8),
        scenario=np.full(n, _SCENARIO[scenario]),
    )


def _merchant_fraud(rng: np.random.Generator, cfg: SynthConfig, w: _World, parts: _Parts) -> None:
    rate = cfg.compromised_merchants_per_day_per_10k_users * cfg.users / 10_000 * cfg.days
    incidents = int(rng.poisson(rate))
    if incidents == 0:
        return
    sizes = rng.integers(4, 16, incidents)
    incident = np.repeat(np.arange(incidents), sizes)
    n = len(incident)
    country = rng.integers(0, len(HOME_COUNTRIES), incidents)[incident]
    cat = rng.choice([_CAT[c] for c in ("grocery", "fuel", "restaurants", "apparel")], incidents)
    slot = rng.integers(0, w.per_cell, incidents)
    start = rng.uniform(0.0, max(cfg.days - 1.0, 0.05), incidents) * _DAY_S
    t = start[incident] + rng.uniform(0.0, 3.0, n) * _DAY_S
    t = np.minimum(t, cfg.days * _DAY_S - 1.0)
    same_home = np.flatnonzero(np.isin(w.home, np.arange(len(HOME_COUNTRIES))))
    user = rng.choice(same_home, n)
    shell = (rng.random(incidents) < 0.3)[incident]
    merchant = _merchant_names(country, cat[incident], slot[incident])
    merchant[shell] = rng.choice(SHELL_MERCHANTS, int(shell.sum()))
    device = np.array([f"term-{m}" for m in merchant.tolist()], dtype=object)
    device[shell] = [f"d-{u}-0" for u in user[shell].tolist()]
    _add_fraud(
        parts,
        w,
        "compromised_merchant",
        country=country,
        cat=cat[incident],
        slot=slot[incident],
        merchant=merchant,
        user=user,
        t=t,
        amount=_CAT_MEDIAN[cat[incident]] * rng.uniform(2.0, 6.0, n),
        channel=np.where(shell, 1, 0),
        device=device,
    )


def generate(cfg: SynthConfig = SynthConfig()) -> pd.DataFrame:
    """All transactions of ``cfg`` in time order, one row each, with :data:`COLUMNS`.

    ``timestamp`` is a UTC datetime column; ``label`` is 1 for fraud; ``scenario`` names why.
    """
    rng = np.random.default_rng(cfg.seed)
    world = _world(rng, cfg)
    parts = _Parts()
    _genuine(rng, cfg, world, parts)
    _user_fraud(rng, cfg, world, parts)
    _merchant_fraud(rng, cfg, world, parts)
    c = parts.concat()
    order = np.argsort(c["t"], kind="stable")
    c = {name: values[order] for name, values in c.items()}
    n = len(order)
    t0 = np.datetime64(cfg.start.replace(tzinfo=None), "ms")
    timestamp = t0 + np.round(c["t"] * 1000.0).astype("timedelta64[ms]")
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{cfg.seed}-{i:09d}" for i in range(n)],
            "user_id": [f"u-{cfg.seed}-{u:07d}" for u in c["user"].tolist()],
            "amount": np.round(np.maximum(c["amount"], 0.01), 2),
            "currency": "EUR",
            "timestamp": pd.DatetimeIndex(timestamp).tz_localize(UTC),
            "merchant": c["merchant"],
            "merchant_category": pd.Categorical.from_codes(c["cat"], CATEGORY_NAMES),
            "channel": pd.Categorical.from_codes(c["channel"], CHANNELS),
            "location": pd.Categorical.from_codes(c["country"], COUNTRIES),
            "device_id": c["device"],
            "lat": np.round(c["lat"], 4),
            "lon": np.round(c["lon"], 4),
            "label": c["label"].astype(np.int8),
            "scenario": pd.Categorical.from_codes(c["scenario"], SCENARIOS),
        },
        columns=list(COLUMNS),
    )
