"""The entity stage's aggregator (windows per any entity, label feedback) and the join."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest
from fraud_scorer import feature_sets
from fraud_scorer.contract import Transaction
from fraud_scorer.declared_features import DeclaredFeatureEngine, UnsupportedFeatureSet
from fraud_scorer.entity_features import (
    EntityAggregator,
    LabelEvent,
    StagePlan,
    point_in_time_rows,
)
from fraud_scorer.feature_defs import needs_stage, parse_feature_set
from pydantic import ValidationError

_DAY = 86400.0
DEFS = parse_feature_set(
    {
        "history_hours": 24 * 40,
        "features": [
            {"name": "amount", "kind": "field", "field": "amount"},
            {"name": "user_tx_1d", "kind": "window", "agg": "count", "window": "1d"},
            {"name": "m_tx_1h", "kind": "window", "agg": "count", "window": "1h",
             "entity": "merchant"},
            {"name": "m_sum_1d", "kind": "window", "agg": "sum", "of": "amount", "window": "1d",
             "entity": "merchant"},
            {"name": "m_std_1d", "kind": "window", "agg": "std", "of": "amount", "window": "1d",
             "entity": "merchant"},
            {"name": "m_max_7d", "kind": "window", "agg": "max", "of": "amount", "window": "7d",
             "entity": "merchant"},
            {"name": "m_users_1d", "kind": "window", "agg": "distinct", "of": "user_id",
             "window": "1d", "entity": "merchant"},
            {"name": "m_since_last", "kind": "window", "agg": "time_since_last",
             "entity": "merchant"},
            {"name": "m_tx_7d_late", "kind": "window", "agg": "count", "window": "7d",
             "delay": "7d", "entity": "merchant"},
            {"name": "m_risk_7d", "kind": "label", "agg": "fraud_rate", "window": "7d",
             "delay": "7d", "entity": "merchant"},
            {"name": "m_frauds_7d", "kind": "label", "agg": "fraud_count", "window": "7d",
             "delay": "7d", "entity": "merchant"},
            {"name": "device_users_1d", "kind": "window", "agg": "distinct", "of": "user_id",
             "window": "1d", "entity": "device_id"},
            {"name": "ip_tx_1h", "kind": "window", "agg": "count", "window": "1h",
             "entity": "attributes.ip"},
        ],
    }
)  # fmt: skip


def _tx(i: int, ts: float, user: str, merchant: str, amount: float, ip: str | None) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}",
        user_id=user,
        amount=amount,
        currency="EUR",
        timestamp=datetime.fromtimestamp(ts, UTC),
        merchant=merchant,
        merchant_category="retail",
        channel="pos",
        location="FR",
        device_id=f"d{hash(user) % 3}",
        attributes={"ip": ip} if ip else {},
    )


def _stream(n: int = 600, seed: int = 7) -> list[tuple[Transaction, float, bool]]:
    rng = random.Random(seed)
    t, out = 1.7e9, []
    for i in range(n):
        t += rng.expovariate(1 / 3000.0)
        tx = _tx(
            i,
            t,
            f"u{rng.randrange(20)}",
            f"m{rng.randrange(4)}",
            round(rng.uniform(1, 300), 2),
            rng.choice(["10.0.0.1", "10.0.0.2", None]),
        )
        out.append((tx, t, rng.random() < 0.2))
    return out  # fmt: skip


def test_staged_features_are_told_apart_and_need_a_table() -> None:
    plan = StagePlan.of(DEFS)
    assert sorted(plan.slots) == ["attributes.ip", "device_id", "merchant"]
    assert plan.horizon_s == 40 * _DAY  # the longest window (time_since_last: the horizon)
    assert needs_stage(DEFS) == (
        "aggregations per attributes.ip, device_id, merchant and label features "
        "(m_risk_7d, m_frauds_7d)"
    )
    assert DeclaredFeatureEngine(DEFS).names == ("amount", "user_tx_1d")
    with pytest.raises(UnsupportedFeatureSet, match="give the scorer its table"):
        feature_sets.declared(DEFS).make_engine()


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"name": "x", "kind": "window", "agg": "zscore", "of": "amount", "entity": "merchant"},
         "use mean, std, min or max per entity"),
        ({"name": "x", "kind": "window", "agg": "count", "window": "1h", "delay": "1d"},
         "delay applies to features of the entity stage"),
        ({"name": "x", "kind": "label", "agg": "fraud_rate", "window": "7d", "delay": "soon",
          "entity": "merchant"}, "delay 'soon'"),
        ({"name": "x", "kind": "label", "agg": "fraud_share", "window": "7d"}, "fraud_rate"),
    ],
)  # fmt: skip
def test_bad_staged_definitions_say_what_is_wrong(definition: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_feature_set({"features": [definition]})


def test_values_do_not_depend_on_arrival_order_or_duplicates() -> None:
    """What makes a replay after a restart or rebalance publish what an uninterrupted stage
    did: the same transactions and verdicts, in any order and redelivered, give the same
    values."""
    stream = _stream()
    plan = StagePlan.of(DEFS)

    def fold(order: list[int], repeat: bool) -> dict:
        agg = EntityAggregator(plan)
        for i in order:
            tx, ts, fraud = stream[i]
            for _ in range(2 if repeat else 1):
                agg.add_transaction(tx, ts)
                agg.add_label(tx, ts, fraud, ts + 3600)
        return {(e, k): agg.values(e, k) for e in plan.slots for k in agg.keys[e]}

    in_order = fold(list(range(len(stream))), repeat=False)
    shuffled = list(range(len(stream)))
    random.Random(1).shuffle(shuffled)
    assert fold(shuffled, repeat=True) == in_order
    assert len(in_order) == 4 + 3 + 2


def test_windows_delays_and_verdicts_by_hand() -> None:
    plan = StagePlan.of(DEFS)
    agg = EntityAggregator(plan)
    t0 = 1.7e9
    txs = [
        _tx(1, t0, "a", "m", 10.0, None),
        _tx(2, t0 + 2 * _DAY, "b", "m", 30.0, None),
        _tx(3, t0 + 9 * _DAY, "a", "m", 50.0, None),
        _tx(4, t0 + 9 * _DAY + 600, "c", "m", 20.0, None),
    ]
    for tx in txs:
        agg.add_transaction(tx, tx.timestamp.timestamp())
    agg.add_label(txs[1], t0 + 2 * _DAY, True, t0 + 9 * _DAY + 600)
    agg.add_label(txs[2], t0 + 9 * _DAY, True, t0 + 9 * _DAY + 600)  # not yet 7 days old
    got = agg.values("merchant", "m")
    assert got is not None
    values = dict(zip([s.feature.name for s in plan.slots["merchant"]], got.values, strict=True))
    assert values == {
        "m_tx_1h": 2.0,  # t3 and t4
        "m_sum_1d": 70.0,
        "m_std_1d": 15.0,
        "m_max_7d": 50.0,
        "m_users_1d": 2.0,
        "m_since_last": 0.0,  # filled in by the join
        "m_tx_7d_late": 2.0,  # (now - 14 d, now - 7 d]: t1 and t2
        "m_risk_7d": 0.5,  # t2 was fraud; t3's verdict is too recent to count
        "m_frauds_7d": 1.0,
    }
    assert (got.last_ts, got.last_tx, got.as_of) == (t0 + 9 * _DAY + 600, "t4", t0 + 9 * _DAY + 600)
    agg.add_label(txs[1], t0 + 2 * _DAY, False, t0 + 10 * _DAY)  # the verdict was changed
    after = agg.values("merchant", "m")
    assert after is not None and after.values[-2:] == (0.0, 0.0)


def test_training_replays_the_stage_point_in_time() -> None:
    """Each row sees the stage's values from the transactions before it and the verdicts
    known by then, and the per-user features of the scorer's own engine; checked against a
    direct count for two features."""
    stream = _stream(400)
    txs = [(tx, ts) for tx, ts, _ in stream]
    known = [ts + 2 * _DAY for _, ts, _ in stream]  # verdicts arrive two days late
    labels = [LabelEvent(i, fraud, known[i]) for i, (_, _, fraud) in enumerate(stream)]
    rows = point_in_time_rows(DEFS, txs, labels, feature_sets.declared(DEFS).make_engine)
    names = DEFS.names
    for i, (tx, ts, _) in enumerate(stream):
        row = dict(zip(names, rows[i], strict=True))
        before = [(t2, ts2, f2) for t2, ts2, f2 in stream[:i] if t2.merchant == tx.merchant]
        if not before:
            assert row["m_tx_1h"] == 0 and row["m_since_last"] == DEFS.history_hours * 3600
            continue
        # The stage's clock for the merchant: its newest transaction or verdict before ts.
        as_of = max([b[1] for b in before]
                    + [known[j] for j, (t2, _, _) in enumerate(stream)
                       if t2.merchant == tx.merchant and known[j] < ts])  # fmt: skip
        assert row["m_tx_1h"] == sum(1 for b in before if b[1] > as_of - 3600)
        hi, lo = as_of - 7 * _DAY, as_of - 14 * _DAY
        late = [b for b in before if lo < b[1] <= hi]
        frauds = [
            j for j, (t2, ts2, f2) in enumerate(stream)
            if t2.merchant == tx.merchant and f2 and lo < ts2 <= hi and known[j] <= as_of
            and j != i
        ]  # fmt: skip
        assert row["m_tx_7d_late"] == len(late)
        assert row["m_risk_7d"] == pytest.approx(len(frauds) / len(late) if frauds else 0.0)
        assert row["m_since_last"] == pytest.approx(ts - before[-1][1])
        assert row["user_tx_1d"] == sum(
            1 for t2, ts2, _ in stream[:i] if t2.user_id == tx.user_id and ts2 > ts - _DAY
        )
    assert math.isclose(rows[0][0], stream[0][0].amount)


def test_a_key_idle_past_the_horizon_reads_as_never_seen_and_is_forgotten() -> None:
    """Values are as of the key's newest event; once that is older than the horizon, the join
    reads the defaults (in training as in serving), and the stage drops the key."""
    plan = StagePlan.of(DEFS)
    agg = EntityAggregator(plan)
    t0 = 1.7e9
    old = _tx(1, t0, "a", "m", 10.0, None)
    agg.add_transaction(old, t0)
    engine = feature_sets.declared(DEFS).make_engine(agg.rows_of)
    names = DEFS.names
    row = engine.compute(0, _tx(2, t0 + 60, "b", "m", 1.0, None), t0 + 60)
    soon = dict(zip(names, row, strict=True))
    assert soon["m_tx_1h"] == 1 and soon["m_since_last"] == 60
    later = t0 + plan.horizon_s + 1
    row = engine.compute(0, _tx(3, later, "c", "m", 1.0, None), later)
    gone = dict(zip(names, row, strict=True))
    assert gone["m_tx_1h"] == 0 and gone["m_since_last"] == DEFS.history_hours * 3600
    assert agg.expire_idle(later) == [("merchant", "m"), ("device_id", old.device_id)]
    assert agg.values("merchant", "m") is None


def test_the_scorers_table_keeps_rows_of_its_own_set_and_forgets_tombstoned_keys() -> None:
    """What a scorer's reader thread does with each record of the table topic."""
    import msgspec
    from fraud_runtime.settings import KafkaSettings
    from fraud_scorer.entity_features import EntityValues
    from fraud_scorer.entity_table import EntityTable, TableMetrics
    from prometheus_client import CollectorRegistry

    class Msg:
        def __init__(self, key: str, value: bytes | None) -> None:
            self._key, self._value = key.encode(), value

        def key(self) -> bytes:
            return self._key

        def value(self) -> bytes | None:
            return self._value

        def headers(self) -> list[tuple[str, bytes]]:
            return [("fe.source_ms", b"1")]

    plan = StagePlan.of(DEFS)
    table = EntityTable(KafkaSettings(), "t", TableMetrics(CollectorRegistry(), "d", "stable"),
                        plan.version)  # fmt: skip
    mine = EntityValues(plan.version, 1.0, 1.0, (1.0,) * 8, "t1")
    other = EntityValues("fs-000000000000", 1.0, 1.0, (9.0,), "t2")
    decode = msgspec.json.Decoder(EntityValues).decode
    get = table.rows_of("merchant").get
    table._apply(Msg("merchant=m1", msgspec.json.encode(mine)), decode)
    table._apply(Msg("merchant=m2", msgspec.json.encode(other)), decode)
    table._apply(Msg("merchant=m=3", msgspec.json.encode(mine)), decode)  # "=" in a value
    table._apply(Msg("merchant=m4", b"not json"), decode)
    assert (get("m1"), get("m2"), get("m=3"), get("m4")) == (
        mine.joined(),
        None,
        mine.joined(),
        None,
    )
    table._apply(Msg("merchant=m1", None), decode)
    assert get("m1") is None and len(table) == 1
