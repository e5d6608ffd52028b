"""Seeded synthetic transactions with labelled fraud scenarios.

Legitimate behaviour: each user has a home country, one or two devices, a few favourite merchant
categories, a personal spending scale and a daily rhythm. Injected fraud (label 1), each with
its scenario name:

- ``card_testing``: a burst of tiny card-not-present payments from a new device;
- ``location_jump``: account takeover - a new device in a far-away country, high amounts,
  minutes after the user's last genuine payment;
- ``high_amount``: one payment many times the user's usual spend;
- ``risky_merchant``: payments at compromised merchants (``XYZ_Merchant``, ``UnknownShop``).

Noise that looks suspicious but is legitimate (label 0): trips abroad at plausible speed, the
occasional big purchase, and new devices.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

COUNTRIES: Final = ("DE", "FR", "GB", "ES", "IT", "NL", "PL", "SE", "BE", "AT", "PT", "IE")
FAR_COUNTRIES: Final = ("US", "BR", "NG", "RU", "CN", "IN", "ID", "MX", "ZA", "VN", "PH")
NEIGHBOURS: Final = {c: [o for o in COUNTRIES if o != c] for c in COUNTRIES}
CATEGORIES: Final = {
    # category: (median amount, channel card-not-present probability)
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
RISKY_MERCHANTS: Final = ("XYZ_Merchant", "UnknownShop")
SCENARIOS: Final = ("card_testing", "location_jump", "high_amount", "risky_merchant")
# Relative weight of each hour of the day for genuine activity.
_HOURLY: Final = (
    1,
    0.5,
    0.3,
    0.2,
    0.2,
    0.4,
    1,
    2,
    3,
    3.5,
    4,
    4.5,
    5,
    4.5,
    4,
    4,
    4.5,
    5,
    5.5,
    5,
    4,
    3,
    2,
    1.5,
)
_HOUR_CDF: Final = [sum(_HOURLY[: i + 1]) / sum(_HOURLY) for i in range(24)]


@dataclass(frozen=True)
class SynthConfig:
    users: int = 5000
    days: float = 7.0
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    tx_per_user_per_day: float = 2.5
    fraud_users_share: float = 0.03
    seed: int = 7


@dataclass(frozen=True, slots=True)
class LabeledTransaction:
    tx: dict[str, Any]
    label: int
    scenario: str


@dataclass
class _User:
    uid: str
    home: str
    devices: list[str]
    categories: list[str]
    scale: float
    rate: float


def _make_user(rng: random.Random, i: int, cfg: SynthConfig) -> _User:
    uid = f"user-{cfg.seed}-{i:07d}"
    cats = rng.sample(list(CATEGORIES), k=rng.randint(3, 6))
    return _User(
        uid=uid,
        home=rng.choice(COUNTRIES),
        devices=[f"dev-{uid}-{k}" for k in range(rng.randint(1, 2))],
        categories=cats,
        scale=math.exp(rng.gauss(0.0, 0.45)),
        rate=cfg.tx_per_user_per_day * math.exp(rng.gauss(0.0, 0.5)),
    )


def _time_of_day(rng: random.Random) -> float:
    u = rng.random()
    hour = next(h for h, c in enumerate(_HOUR_CDF) if u <= c)
    return (hour + rng.random()) * 3600.0


def _tx(
    user: _User,
    ts: float,
    amount: float,
    category: str,
    country: str,
    device: str,
    channel: str,
    merchant: str,
) -> dict[str, Any]:
    return {
        "user_id": user.uid,
        "amount": round(max(amount, 0.01), 2),
        "currency": "EUR",
        "timestamp": ts,
        "merchant": merchant,
        "merchant_category": category,
        "channel": channel,
        "location": country,
        "device_id": device,
    }


def _genuine(
    rng: random.Random, user: _User, t0: float, days: float
) -> Iterator[LabeledTransaction]:
    n = max(1, int(rng.expovariate(1.0 / (user.rate * days)))) if days > 0 else 0
    travel_day = int(rng.random() * days) if rng.random() < 0.05 else -1
    abroad = rng.choice(NEIGHBOURS[user.home])
    for _ in range(n):
        day = int(rng.random() * days)
        ts = t0 + day * 86400.0 + _time_of_day(rng)
        cat = rng.choice(user.categories)
        median, cnp = CATEGORIES[cat]
        amount = median * user.scale * math.exp(rng.gauss(0.0, 0.6))
        if rng.random() < 0.005:  # the occasional big, genuine purchase
            amount *= rng.uniform(4, 10)
        country = abroad if day == travel_day else user.home
        device = rng.choice(user.devices) if rng.random() > 0.01 else f"dev-{user.uid}-new"
        channel = "online" if rng.random() < cnp else "pos"
        merchant = f"{cat}-{country}-{rng.randrange(40)}"
        yield LabeledTransaction(
            _tx(user, ts, amount, cat, country, device, channel, merchant), 0, "genuine"
        )


def _fraud(rng: random.Random, user: _User, t0: float, days: float) -> Iterator[LabeledTransaction]:
    scenario = rng.choice(SCENARIOS)
    ts = t0 + rng.uniform(0.1, 1.0) * days * 86400.0

    def fraud(
        ts: float, amount: float, cat: str, country: str, device: str, merchant: str
    ) -> LabeledTransaction:
        # Every injected fraud is card-not-present.
        tx = _tx(user, ts, amount, cat, country, device, "online", merchant)
        return LabeledTransaction(tx, 1, scenario)

    if scenario == "card_testing":
        device = f"dev-ct-{rng.randrange(10**9)}"
        country = rng.choice(FAR_COUNTRIES + COUNTRIES)
        for _ in range(rng.randint(6, 18)):
            ts += rng.uniform(3, 90)
            amount = rng.uniform(0.5, 3.0)
            yield fraud(
                ts,
                amount,
                "online_services",
                country,
                device,
                f"online_services-{country}-{rng.randrange(40)}",
            )
    elif scenario == "location_jump":
        device = f"dev-ato-{rng.randrange(10**9)}"
        country = rng.choice(FAR_COUNTRIES)
        for _ in range(rng.randint(1, 3)):
            ts += rng.uniform(60, 1200)
            cat = rng.choice(("electronics", "travel", "apparel"))
            amount = CATEGORIES[cat][0] * user.scale * rng.uniform(3, 10)
            yield fraud(ts, amount, cat, country, device, f"{cat}-{country}-{rng.randrange(40)}")
    elif scenario == "high_amount":
        cat = rng.choice(("electronics", "travel"))
        amount = CATEGORIES[cat][0] * user.scale * rng.uniform(12, 40)
        device = rng.choice(user.devices)
        yield fraud(ts, amount, cat, user.home, device, f"{cat}-{user.home}-{rng.randrange(40)}")
    else:
        for _ in range(rng.randint(1, 3)):
            ts += rng.uniform(600, 36000)
            cat = rng.choice(("electronics", "apparel", "entertainment"))
            amount = CATEGORIES[cat][0] * user.scale * math.exp(rng.gauss(0.3, 0.5))
            device = rng.choice(user.devices)
            yield fraud(ts, amount, cat, user.home, device, rng.choice(RISKY_MERCHANTS))


def generate(cfg: SynthConfig = SynthConfig()) -> list[LabeledTransaction]:
    """All transactions of ``cfg``, in time order, with ids and RFC 3339 timestamps."""
    rng = random.Random(cfg.seed)
    t0 = cfg.start.timestamp()
    events: list[LabeledTransaction] = []
    for i in range(cfg.users):
        user = _make_user(rng, i, cfg)
        events.extend(_genuine(rng, user, t0, cfg.days))
        if rng.random() < cfg.fraud_users_share:
            events.extend(_fraud(rng, user, t0, cfg.days))
    events.sort(key=lambda e: e.tx["timestamp"])
    for n, e in enumerate(events):
        e.tx["transaction_id"] = f"tx-{cfg.seed}-{n:09d}"
        e.tx["timestamp"] = datetime.fromtimestamp(e.tx["timestamp"], UTC).isoformat()
    return events
