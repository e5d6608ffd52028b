"""Track slices: every user decided by exactly one track, with the same decision a single
scorer would make, even when the canary weight moves mid-stream."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgspec
import pandas as pd
import pytest
from fraud_scorer.config import DecisionSettings, RuleSpec, SliceSettings
from fraud_scorer.contract import user_bucket
from fraud_scorer.features import FeatureEngine
from fraud_scorer.model import load_model
from fraud_scorer.pipeline import BatchScorer
from fraud_scorer.rules import compile_rules
from fraud_training.data import to_payloads

from tests.records import Msg

RULES = [RuleSpec(name="big", expression="tx.amount > 500.0")]


def scorer(model_dir: Path, track: str, slice_: SliceSettings, **kw: bool) -> BatchScorer:
    return BatchScorer(
        model=load_model(model_dir),
        ruleset=compile_rules(RULES, DecisionSettings(review_at=0.5, block_at=0.9)),
        engine=FeatureEngine(),
        detector="d",
        track=track,
        max_message_bytes=1 << 16,
        slice_=slice_,
        clock=lambda: 1_800_000_000.0,
        **kw,
    )


def decisions(s: BatchScorer, batch: list[Msg]) -> dict[str, dict[str, object]]:
    out = {}
    for _, value in s.process(batch).decisions:  # type: ignore[arg-type]
        d = msgspec.json.decode(value)
        out[d["transaction_id"]] = {k: d[k] for k in ("action", "score", "reasons", "features")}
    return out


def test_bucket_is_stable_and_uniform() -> None:
    assert user_bucket("user-42") == user_bucket("user-42")
    counts = Counter(user_bucket(f"u{i}") for i in range(20_000))
    assert set(counts) == set(range(100))
    assert max(counts.values()) < 1.3 * 200


def test_tracks_split_users_exactly_and_decide_like_one_scorer(
    small_stream: pd.DataFrame, model_dir: Path
) -> None:
    msgs = [Msg(p, _offset=i) for i, p in enumerate(to_payloads(small_stream.iloc[:6000]))]
    reference = scorer(model_dir, "stable", SliceSettings())
    stable = scorer(model_dir, "stable", SliceSettings(start=10, end=100))
    canary = scorer(model_dir, "canary", SliceSettings(start=0, end=10), dead_letters=False)
    ref, got_stable, got_canary = {}, {}, {}
    for n, start in enumerate(range(0, len(msgs), 500)):
        if n == 6:  # a canary step: 10% -> 50%, mid-stream
            stable.slice = SliceSettings(start=50, end=100)
            canary.slice = SliceSettings(start=0, end=50)
        batch = msgs[start : start + 500]
        ref |= decisions(reference, batch)
        got_stable |= decisions(stable, batch)
        got_canary |= decisions(canary, batch)
    assert not set(got_stable) & set(got_canary)  # one track per transaction
    assert {**got_stable, **got_canary} == ref  # same features, scores and actions: warm state
    users = dict(zip(small_stream["transaction_id"], small_stream["user_id"], strict=False))
    assert all(user_bucket(users[t]) < 50 for t in got_canary)
    share = len(got_canary) / len(ref)
    assert 0.1 < share < 0.5


def test_shadow_and_canary_leave_alerts_and_dead_letters_to_stable(
    small_stream: pd.DataFrame, model_dir: Path
) -> None:
    msgs = [Msg(p, _offset=i) for i, p in enumerate(to_payloads(small_stream.iloc[:2000]))]
    msgs.append(Msg(b"not json", _offset=99_999))
    shadow = scorer(model_dir, "shadow", SliceSettings(), alerts=False, dead_letters=False)
    result = shadow.process(msgs)  # type: ignore[arg-type]
    assert len(result.decisions) == 2000 and result.alerts == []
    assert result.dead_letters == [] and result.rejected_elsewhere == 1
    assert sum(result.actions[a] for a in ("review", "block")) > 0  # it did flag some
    stable = scorer(model_dir, "stable", SliceSettings())
    result = stable.process(msgs)  # type: ignore[arg-type]
    assert len(result.dead_letters) == 1 and result.alerts


@pytest.mark.parametrize(("start", "end"), [(0, 0), (0, 100), (37, 38)])
def test_slice_bounds(start: int, end: int) -> None:
    s = SliceSettings(start=start, end=end)
    inside = [b for b in range(100) if s.contains(b)]
    assert len(inside) == end - start
