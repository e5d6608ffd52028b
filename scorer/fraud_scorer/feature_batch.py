"""A batch's features at once: the rows the rules read and the matrix the model scores.

The per-user engines compute a row per transaction (each one folds the event into its user's
state, so they are sequential per user); what a row joins from the entity stage's table is
independent per row, so it is done here for the whole batch: one dict read per key, then numpy
for the staleness checks, the defaults and ``time_since_last``. The values are those of
:meth:`JoinedEngine.compute <fraud_scorer.entity_features.JoinedEngine.compute>` (the same float
operations; ``tests/scorer/test_feature_batch.py`` holds them equal), at about a tenth of its
cost per row (docs/performance.md). Kept out of the engines' modules, which the operator
imports without numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fraud_scorer.contract import Transaction
from fraud_scorer.entity_features import EntityJoin, JoinedEngine, UserEngine
from fraud_scorer.entity_table import EntityRows


@dataclass
class BatchFeatures:
    rows: list[list[float]]  # one per transaction, in the set's order (what rules read)
    matrix: npt.NDArray[np.float64]  # the same values (what the model scores)


def batch_features(
    engine: UserEngine | JoinedEngine,
    partitions: Sequence[int],
    txs: Sequence[Transaction],
    times: Sequence[float],
) -> BatchFeatures:
    """Every transaction's features, in order, each folded into its user's state."""
    if not txs:
        return BatchFeatures([], np.empty((0, 0)))
    if isinstance(engine, JoinedEngine):
        return _joined(engine, partitions, txs, times)
    compute = engine.compute
    rows = [compute(p, tx, ts) for p, tx, ts in zip(partitions, txs, times, strict=True)]
    return BatchFeatures(rows, np.array(rows, dtype=np.float64))


def _joined(
    engine: JoinedEngine,
    partitions: Sequence[int],
    txs: Sequence[Transaction],
    times: Sequence[float],
) -> BatchFeatures:
    compute = engine.user.compute
    own = [compute(p, tx, ts) for p, tx, ts in zip(partitions, txs, times, strict=True)]
    blocks = [np.array(own, dtype=np.float64)]
    at = np.array(times, dtype=np.float64)
    horizon, history = engine.plan.horizon_s, engine.plan.history_s
    blocks += (_join_values(join, txs, at, horizon, history) for join in engine.joins)
    matrix = np.hstack(blocks)
    if engine.order:
        matrix = matrix[:, engine.order]
    return BatchFeatures(matrix.tolist(), matrix)


def _join_values(
    join: EntityJoin,
    txs: Sequence[Transaction],
    at: npt.NDArray[np.float64],
    horizon_s: float,
    history_s: float,
) -> npt.NDArray[np.float64]:
    key_of, width = join.key_of, 2 + len(join.defaults)
    keys = list(map(key_of, txs))
    if isinstance(join.rows, EntityRows):
        found = join.rows.gather(keys, width)
    else:  # training's replay or a test's table: row by row
        get, missing = join.rows.get, (np.nan,) * width
        found = np.array(
            [(get(k) or missing) if k is not None else missing for k in keys], dtype=np.float64
        ).reshape(len(keys), width)
    # A key without a row, or idle for longer than the horizon, reads as never seen (a NaN
    # as_of compares false, so "fresh" is spelled as the per-row join's negation).
    fresh = at - found[:, 0] <= horizon_s
    last = found[:, 1]
    values = found[:, 2:]
    values[~fresh] = join.defaults
    for k in join.since:
        values[:, k] = np.where(fresh & (last != 0.0), np.maximum(at - last, 0.0), history_s)
    return values
