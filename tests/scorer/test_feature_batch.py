"""A batch's features at once (fraud_scorer.feature_batch) are the per-row engines' values."""

from __future__ import annotations

import numpy as np
from fraud_scorer import feature_sets
from fraud_scorer.entity_features import EntityAggregator, StagePlan
from fraud_scorer.entity_table import EntityRows
from fraud_scorer.feature_batch import batch_features
from fraud_scorer.features import FeatureEngine

from tests.scorer.test_declared_features import transactions
from tests.scorer.test_entity_features import DEFS, _stream, _tx


def _tables(agg: EntityAggregator) -> dict[str, dict[str, tuple[float, ...]]]:
    """The stage's table as published so far: a row per key."""
    out: dict[str, dict[str, tuple[float, ...]]] = {}
    for entity, keys in agg.keys.items():
        for key in keys:
            values = agg.values(entity, key)
            assert values is not None
            out.setdefault(entity, {})[key] = values.joined()
    return out


def test_the_joined_batch_equals_the_per_row_join_exactly() -> None:
    """Rows of the scorer's table (EntityRows, gathered per batch) and of a plain mapping
    (row by row) give every value the per-row join gives, bit for bit: keys the table lacks,
    transactions without a key, keys idle past the horizon, time_since_last, the set's order."""
    stream = _stream(400)
    plan = StagePlan.of(DEFS)
    agg = EntityAggregator(plan)
    for tx, ts, _ in stream[:300]:
        agg.add_transaction(tx, ts)
    published = _tables(agg)
    published["merchant"].pop("m3")  # a key the table has not received yet
    scorer_rows: dict[str, EntityRows] = {}
    for entity, rows in published.items():
        table = scorer_rows[entity] = EntityRows()
        for key, row in rows.items():
            table.put(key, row)
    later = [(tx, ts) for tx, ts, _ in stream[300:]]
    idle = later[-1][1] + plan.horizon_s + 1  # every key's newest event is past the horizon
    later += [(_tx(900 + i, idle + i, "u1", f"m{i % 5}", 5.0, "10.0.0.1"), idle + i)
              for i in range(5)]  # fmt: skip
    txs, times = [tx for tx, _ in later], [ts for _, ts in later]
    parts = [i % 3 for i in range(len(txs))]

    def engine(lookup):  # type: ignore[no-untyped-def]
        return feature_sets.declared(DEFS).make_engine(lookup)

    per_row = engine(lambda entity: published.get(entity, {}))
    expected = [per_row.compute(p, tx, ts) for p, tx, ts in zip(parts, txs, times, strict=True)]
    for lookup in (lambda e: scorer_rows.setdefault(e, EntityRows()),
                   lambda e: published.get(e, {})):  # fmt: skip
        joined = engine(lookup)
        batch = [batch_features(joined, parts[i:i + 64], txs[i:i + 64], times[i:i + 64])
                 for i in range(0, len(txs), 64)]  # fmt: skip
        rows = [row for b in batch for row in b.rows]
        assert rows == expected
        assert np.array_equal(np.vstack([b.matrix for b in batch]), np.array(expected))
    names = DEFS.names
    assert any(r[names.index("m_tx_1h")] for r in expected)  # joined values, not only defaults
    stale = dict(zip(names, expected[-1], strict=True))
    assert stale["m_since_last"] == DEFS.history_hours * 3600 and stale["m_sum_1d"] == 0


def test_a_batch_on_the_v1_engine_is_its_rows() -> None:
    txs = transactions(3, users=40, days=2.0)
    times = [tx.timestamp.timestamp() for tx in txs]
    one, many = FeatureEngine(), FeatureEngine()
    expected = [one.compute(0, tx, ts) for tx, ts in zip(txs, times, strict=True)]
    batch = batch_features(many, [0] * len(txs), txs, times)
    assert batch.rows == expected and batch.matrix.tolist() == expected
    assert batch_features(many, [], [], []).rows == []


def test_the_table_gathers_nan_rows_for_keys_it_lacks() -> None:
    rows = EntityRows()
    assert np.isnan(rows.gather(["a", None], 3)).all()  # no row yet
    rows.put("a", (1.0, 2.0, 3.0))
    got = rows.gather(["a", "b", None, "a"], 3)
    assert got[0].tolist() == [1.0, 2.0, 3.0] == got[3].tolist()
    assert np.isnan(got[1:3]).all()
    assert np.isnan(rows.gather(["a"], 4)).all()  # rows of another width (another set)


def test_a_state_rebuild_through_a_joined_engine_folds_the_users_state() -> None:
    """``BatchScorer.replay`` folds only the per-user state of a joined engine (the table's
    values are not needed to rebuild it): the rows after a replay are those of a scorer that
    never stopped."""
    import msgspec
    from fraud_scorer.pipeline import BatchScorer
    from fraud_scorer.rules import compile_rules

    from tests.records import Msg

    stream = _stream(200)
    txs, times = [tx for tx, _, _ in stream], [ts for _, ts, _ in stream]
    records = [Msg(msgspec.json.encode(tx), _offset=i) for i, tx in enumerate(txs)]
    features = feature_sets.declared(DEFS)

    def scorer() -> BatchScorer:
        return BatchScorer(
            model=None,  # type: ignore[arg-type]  # replay never scores
            ruleset=compile_rules([], features=features),
            engine=features.make_engine(lambda _entity: {}),
            detector="d",
            track="stable",
            max_message_bytes=65536,
            feature_names=features.names,
        )

    whole, rebuilt = scorer(), scorer()
    expected = batch_features(whole.engine, [0] * 200, txs, times).rows[150:]
    assert rebuilt.replay(records[:150]) == 150  # type: ignore[arg-type]
    assert batch_features(rebuilt.engine, [0] * 50, txs[150:], times[150:]).rows == expected
