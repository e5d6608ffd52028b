"""The benchmark scenario of Le Borgne et al., *Reproducible Machine Learning for Credit Card
Fraud Detection - Practical Handbook* (2022), re-implemented from its prose description.

**Simulator** (handbook section "Transaction data simulator"). Customers and terminals live on a
100 x 100 grid. A customer has a mean amount drawn uniformly in [5, 100] (standard deviation half
of it) and a mean number of transactions per day drawn uniformly in [0, 4]; it uses the
terminals within radius 5 of its location, uniformly. Each day a customer makes a Poisson number
of transactions; each one's time of day is normal around noon (standard deviation 20,000 s,
draws outside the day are dropped) and its amount normal with the customer's parameters (a
negative draw is replaced by a uniform one in [0, 2 x mean]). Fraud scenarios:

1. every transaction above 220 is fraudulent;
2. every day two terminals are compromised: all their transactions in the next 28 days are
   fraudulent;
3. every day three customers are compromised: in the next 14 days a third of their transactions
   have their amount multiplied by 5 and are fraudulent.

Defaults are the handbook's: 5,000 customers, 10,000 terminals, 183 days from 2018-04-01.

**Features** (section "Baseline feature transformation"), 15 of them: the amount; whether the
transaction is on a weekend and at night (hour <= 6); for the customer, the number and mean
amount of its transactions in the last 1, 7 and 30 days (the current one included); for the
terminal, the number of transactions and the share of fraudulent ones in the 1, 7 and 30 days
that end one *delay period* (7 days) before the transaction - labels are only known after a
delay.

**Protocol** (section "Baseline fraud detection system"): train on 7 days, leave a 7-day delay
period, test on the next 7 days; customers known to be compromised (a fraud in the training
period, or one day of the delay period for each test day elapsed) are removed from the test
days, since their cards are blocked. Card precision@100 is the mean over test days of the share
of truly compromised cards among the 100 cards with the highest daily score.

The code is written from that prose, with numpy; none of the handbook's code is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.spatial import cKDTree

FEATURES: Final = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
)
FEATURE_SET: Final = "handbook-15"
WINDOWS_DAYS: Final = (1, 7, 30)
DELAY_DAYS: Final = 7
_DAY_S: Final = 86400

# The handbook's published results for this protocol (its sections "Baseline fraud detection
# system" and "Model selection"), the rows our report is compared with.
PUBLISHED: Final = {
    "random forest (handbook baseline)": {
        "average_precision": 0.658,
        "card_precision_at_100": 0.287,
    },
    "XGBoost, prequential selection (handbook best)": {
        "average_precision": 0.687,
        "card_precision_at_100": 0.303,
    },
}
TRAIN_START: Final = datetime(2018, 7, 25, tzinfo=UTC)


@dataclass(frozen=True)
class HandbookConfig:
    customers: int = 5000
    terminals: int = 10000
    days: int = 183
    start: datetime = datetime(2018, 4, 1, tzinfo=UTC)
    radius: float = 5.0
    seed: int = 0


def simulate(cfg: HandbookConfig = HandbookConfig()) -> pd.DataFrame:
    """Transactions in time order with ``TX_DATETIME``, ``CUSTOMER_ID``, ``TERMINAL_ID``,
    ``TX_AMOUNT``, ``TX_TIME_SECONDS``, ``TX_TIME_DAYS``, ``TX_FRAUD``, ``TX_FRAUD_SCENARIO``."""
    rng = np.random.default_rng(cfg.seed)
    cust_xy = rng.uniform(0, 100, (cfg.customers, 2))
    mean_amount = rng.uniform(5, 100, cfg.customers)
    std_amount = mean_amount / 2
    mean_per_day = rng.uniform(0, 4, cfg.customers)
    term_xy = rng.uniform(0, 100, (cfg.terminals, 2))
    nearby = cKDTree(term_xy).query_ball_point(cust_xy, r=cfg.radius)
    n_near = np.array([len(t) for t in nearby])
    near_flat = np.array([t for ts in nearby for t in sorted(ts)], dtype=np.int64)
    near_start = np.cumsum(n_near) - n_near

    per_day = rng.poisson(np.repeat(mean_per_day[None, :], cfg.days, axis=0))  # days x customers
    per_day[:, n_near == 0] = 0  # a customer with no terminal in reach does not pay
    day, cust = np.nonzero(per_day)
    counts = per_day[day, cust]
    day, cust = np.repeat(day, counts), np.repeat(cust, counts)
    n = len(cust)
    seconds = np.round(rng.normal(_DAY_S / 2, 20000, n))
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    negative = amount < 0
    amount[negative] = rng.uniform(0, mean_amount[cust[negative]] * 2)
    amount = np.round(amount, 2)
    terminal = near_flat[near_start[cust] + (rng.random(n) * n_near[cust]).astype(np.int64)]
    inside = (seconds > 0) & (seconds < _DAY_S)
    day, cust, seconds = day[inside], cust[inside], seconds[inside]
    amount, terminal = amount[inside], terminal[inside]
    tx_time = (day * _DAY_S + seconds).astype(np.int64)
    order = np.lexsort((cust, tx_time))
    day, cust, tx_time = day[order], cust[order], tx_time[order]
    amount, terminal = amount[order], terminal[order]

    scenario = np.zeros(len(tx_time), np.int8)
    scenario[amount > 220] = 1
    for d in range(cfg.days):
        bad_terms = rng.choice(cfg.terminals, 2, replace=False)
        hit = np.isin(terminal, bad_terms) & (day >= d) & (day < d + 28)
        scenario[hit] = 2
        bad_custs = rng.choice(cfg.customers, 3, replace=False)
        window = np.flatnonzero(np.isin(cust, bad_custs) & (day >= d) & (day < d + 14))
        chosen = window[rng.random(len(window)) < 1 / 3]
        amount[chosen] = np.round(amount[chosen] * 5, 2)
        scenario[chosen] = 3
    start = pd.Timestamp(cfg.start.replace(tzinfo=None))
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(len(tx_time)),
            "TX_DATETIME": start + pd.to_timedelta(tx_time, unit="s"),
            "CUSTOMER_ID": cust,
            "TERMINAL_ID": terminal,
            "TX_AMOUNT": amount,
            "TX_TIME_SECONDS": tx_time,
            "TX_TIME_DAYS": day,
            "TX_FRAUD": (scenario > 0).astype(np.int8),
            "TX_FRAUD_SCENARIO": scenario,
        }
    )


def _window_sums(
    group: npt.NDArray[np.int64],
    t: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    lo: int,
    hi: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """For each row: how many rows of the same group have time in ``(t - hi, t - lo]`` and the
    sum of their ``values``. Rows must be sorted by (group, time)."""
    key = group * (1 << 32) + t  # times fit in 32 bits (183 days is 1.6e7 s)
    csum = np.concatenate(([0.0], np.cumsum(values)))
    upper = np.searchsorted(key, key - lo, side="right")
    lower = np.searchsorted(key, key - hi, side="right")
    return (upper - lower).astype(np.float64), csum[upper] - csum[lower]


def features(tx: pd.DataFrame, delay_days: int = DELAY_DAYS) -> pd.DataFrame:
    """The 15 handbook features of each transaction, indexed like ``tx``."""
    out = pd.DataFrame(index=tx.index)
    when = tx["TX_DATETIME"]
    out["TX_AMOUNT"] = tx["TX_AMOUNT"].to_numpy()
    out["TX_DURING_WEEKEND"] = (when.dt.day_of_week >= 5).astype(np.int8).to_numpy()
    out["TX_DURING_NIGHT"] = (when.dt.hour <= 6).astype(np.int8).to_numpy()
    t = tx["TX_TIME_SECONDS"].to_numpy(np.int64)

    order = np.lexsort((t, tx["CUSTOMER_ID"].to_numpy()))
    cust, ts = tx["CUSTOMER_ID"].to_numpy(np.int64)[order], t[order]
    amount = tx["TX_AMOUNT"].to_numpy(np.float64)[order]
    for w in WINDOWS_DAYS:
        count, total = _window_sums(cust, ts, amount, 0, w * _DAY_S)
        col_n, col_avg = np.empty(len(t)), np.empty(len(t))
        col_n[order], col_avg[order] = count, total / count
        out[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = col_n
        out[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = col_avg

    order = np.lexsort((t, tx["TERMINAL_ID"].to_numpy()))
    term, ts = tx["TERMINAL_ID"].to_numpy(np.int64)[order], t[order]
    fraud = tx["TX_FRAUD"].to_numpy(np.float64)[order]
    delay = delay_days * _DAY_S
    for w in WINDOWS_DAYS:
        count, frauds = _window_sums(term, ts, fraud, delay, delay + w * _DAY_S)
        risk = np.divide(frauds, count, out=np.zeros_like(frauds), where=count > 0)
        col_n, col_risk = np.empty(len(t)), np.empty(len(t))
        col_n[order], col_risk[order] = count, risk
        out[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = col_n
        out[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = col_risk
    return out[list(FEATURES)]


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def split(
    tx: pd.DataFrame,
    train_start: datetime = TRAIN_START,
    *,
    train_days: int = 7,
    delay_days: int = DELAY_DAYS,
    test_days: int = 7,
) -> Split:
    """The handbook's train / delay / test split, with known-compromised cards removed from
    each test day (their frauds were found in training or in the delay period so far)."""
    start = pd.Timestamp(train_start.replace(tzinfo=None))
    day0 = int((start - tx["TX_DATETIME"].min().normalize()).days)
    days = tx["TX_TIME_DAYS"].to_numpy()
    train = tx[(days >= day0) & (days < day0 + train_days)]
    known = set(train.loc[train["TX_FRAUD"] == 1, "CUSTOMER_ID"])
    test_parts = []
    for d in range(test_days):
        delay_day = tx[days == day0 + train_days + d - 1] if d else tx.iloc[:0]
        known |= set(delay_day.loc[delay_day["TX_FRAUD"] == 1, "CUSTOMER_ID"])
        today = tx[days == day0 + train_days + delay_days + d]
        test_parts.append(today[~today["CUSTOMER_ID"].isin(known)])
    return Split(train, pd.concat(test_parts))
