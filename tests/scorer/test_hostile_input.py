"""Hostile input, property-based: whatever bytes arrive, the decoder and the whole scoring
pipeline never raise, and every message is accounted for as one decision or one dead letter
(carrying its original bytes and a machine-readable reason)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fraud_scorer.config import DecisionSettings, RuleSpec
from fraud_scorer.contract import REASONS, Rejected, Transaction, TransactionDecoder
from fraud_scorer.features import FeatureEngine
from fraud_scorer.model import Model, load_model
from fraud_scorer.pipeline import BatchScorer
from fraud_scorer.rules import compile_rules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.records import Msg

MAX_BYTES = 16_384
VALID: dict[str, Any] = {
    "transaction_id": "t-1",
    "user_id": "u-1",
    "amount": 42.5,
    "currency": "EUR",
    "timestamp": "2026-11-01T10:00:00Z",
    "merchant": "grocery-DE-1",
    "merchant_category": "grocery",
    "channel": "pos",
    "location": "DE",
    "device_id": "d-1",
    "lat": 52.5,
    "lon": 13.4,
}
FIELDS = sorted(VALID)

# Any JSON value, nested (lists and objects inside each other), with NaN and +-Infinity.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # NaN/Infinity as JavaScript spells them


@st.composite
def wrong_types(draw: st.DrawFn) -> bytes:
    """A valid transaction with some fields replaced by any JSON value, or removed."""
    tx = dict(VALID)
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True)):
        if draw(st.booleans()):
            tx[name] = draw(json_values)
        else:
            tx.pop(name)
    return _dumps(tx)


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    """The same key twice, with different values (parsers disagree on which wins)."""
    name = draw(st.sampled_from(FIELDS))
    body = _dumps(VALID)[:-1]
    return body + b', "' + name.encode() + b'": ' + _dumps(draw(json_values)) + b"}"


@st.composite
def huge_fields(draw: st.DrawFn) -> bytes:
    tx = dict(VALID)
    tx[draw(st.sampled_from(FIELDS))] = "x" * draw(st.integers(1_000, 40_000))
    return _dumps(tx)


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(10, 5_000))
    tx = _dumps(VALID)[:-1]
    return tx + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def broken_utf8(draw: st.DrawFn) -> bytes:
    raw = bytearray(_dumps(VALID))
    at = draw(st.integers(0, len(raw) - 1))
    raw[at : at + 1] = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"]))
    return bytes(raw)


@st.composite
def huge_numbers(draw: st.DrawFn) -> bytes:
    tx = dict(VALID)
    text = _dumps(tx).replace(
        b"42.5", draw(st.sampled_from([b"1e999", b"-1e999", b"NaN", b"Infinity", b"1" * 400]))
    )
    return text


hostile = (
    st.binary(max_size=512)
    | wrong_types()
    | duplicate_keys()
    | huge_fields()
    | deep_nesting()
    | broken_utf8()
    | huge_numbers()
    | json_values.map(_dumps)
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile)
def test_the_decoder_never_raises_and_says_why(raw: bytes) -> None:
    out = TransactionDecoder(MAX_BYTES).decode(raw)
    if isinstance(out, Rejected):
        assert out.reason in REASONS and out.detail
        return
    assert isinstance(out, Transaction)
    assert math.isfinite(out.amount) and out.amount >= 0
    assert out.transaction_id and out.user_id


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Model:
    return load_model(model_dir)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(hostile | st.just(_dumps(VALID)), min_size=1, max_size=40))
def test_the_whole_pipeline_accounts_for_every_message(model: Model, batch: list[bytes]) -> None:
    rules = compile_rules(
        [
            RuleSpec(name="big", expression="tx.amount > 1000.0"),
            RuleSpec(name="fast", expression="features.tx_count_1h > 3.0", action="block"),
        ],
        DecisionSettings(),
    )
    scorer = BatchScorer(
        model=model,
        ruleset=rules,
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=MAX_BYTES,
    )
    records = [Msg(raw, _offset=i) for i, raw in enumerate(batch)]
    result = scorer.process(records)  # type: ignore[arg-type]
    assert len(result.decisions) + len(result.dead_letters) == len(batch)
    dead_bytes = sorted(dl.value or b"" for dl in result.dead_letters)
    decided = {msgspec.json.decode(v)["transaction_id"] for _, v in result.decisions}
    assert len(decided) <= len(result.decisions)
    for dl in result.dead_letters:
        assert dl.reason in REASONS
        headers = dict(dl.headers)
        assert headers["dlq.reason"] == dl.reason.encode()
    assert sorted(raw for raw in batch if _rejected(raw)) == dead_bytes
    for _, value in result.decisions:
        d = msgspec.json.decode(value)
        assert 0.0 <= d["score"] <= 1.0 and d["action"] in ("allow", "review", "block")


def _rejected(raw: bytes) -> bool:
    return isinstance(TransactionDecoder(MAX_BYTES).decode(raw), Rejected)
