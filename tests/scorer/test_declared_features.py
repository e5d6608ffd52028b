"""Declared feature sets: the format's checks, its version hash, and v1 written in it giving
the hand-written engine's values on the synthetic stream."""

from __future__ import annotations

import math
import random

import msgspec
import pytest
from fraud_scorer import feature_sets
from fraud_scorer.contract import Transaction, TransactionDecoder
from fraud_scorer.declared_features import DeclaredFeatureEngine
from fraud_scorer.feature_defs import V1_DEFINITIONS, parse_feature_set
from fraud_scorer.features import FEATURE_NAMES, FEATURES, FeatureEngine
from fraud_training.data import to_payloads
from fraud_training.synth import SynthConfig, generate
from pydantic import ValidationError


def transactions(seed: int, users: int = 300, days: float = 4.0) -> list[Transaction]:
    decoder = TransactionDecoder(1 << 16)
    out = []
    for raw in to_payloads(generate(SynthConfig(users=users, days=days, seed=seed))):
        tx = decoder.decode(raw)
        assert isinstance(tx, Transaction)
        out.append(tx)
    return out


def test_v1_in_the_format_is_the_v1_set() -> None:
    assert V1_DEFINITIONS.names == FEATURE_NAMES
    assert V1_DEFINITIONS.cel_types() == {f.name: f.cel_type for f in FEATURES}
    assert V1_DEFINITIONS.version == "v1"  # models trained on v1 keep loading
    reworded = parse_feature_set(
        V1_DEFINITIONS.model_dump(mode="json") | {"features": [
            {**f, "doc": "reworded"} for f in V1_DEFINITIONS.model_dump(mode="json")["features"]
        ]}
    )  # fmt: skip
    assert reworded.version == "v1"  # a description is not part of the version
    longer = parse_feature_set(V1_DEFINITIONS.model_dump(mode="json") | {"history_hours": 720})
    assert longer.version.startswith("fs-") and len(longer.version) == 15


@pytest.mark.parametrize("seed", [1, 2])
def test_v1_declared_computes_the_hand_written_values_bit_for_bit(seed: int) -> None:
    """Identical rows on the synthetic stream, events in order and, for late events, shuffled
    within each hour (the issue asks for 1e-9; amounts in integer cents give equality)."""
    txs = transactions(seed)
    rng = random.Random(seed)
    late = sorted(txs, key=lambda t: (t.timestamp.timestamp() // 3600, rng.random()))
    for stream in (txs, late):
        hand, declared = FeatureEngine(), DeclaredFeatureEngine(V1_DEFINITIONS)
        differ = 0
        for tx in stream:
            ts = tx.timestamp.timestamp()
            differ += hand.compute(0, tx, ts) != declared.compute(0, tx, ts)
        assert differ == 0
        assert declared.user_count() == hand.user_count()


def test_more_kinds_from_attributes_and_windows() -> None:
    defs = parse_feature_set(
        {
            "features": [
                {"name": "risk", "kind": "field", "field": "attributes.device_risk",
                 "default": -1.0},
                {"name": "amount_max_7d", "kind": "window", "agg": "max", "of": "amount",
                 "window": "7d"},
                {"name": "amount_mean", "kind": "window", "agg": "mean", "of": "amount"},
                {"name": "amount_std", "kind": "window", "agg": "std", "of": "amount"},
                {"name": "devices_24h", "kind": "window", "agg": "distinct", "of": "device_id",
                 "window": "24h"},
                {"name": "risk_sum_1h", "kind": "window", "agg": "sum",
                 "of": "attributes.device_risk", "window": "1h"},
            ]
        }
    )  # fmt: skip
    engine = DeclaredFeatureEngine(defs)
    base = {"user_id": "u", "currency": "EUR", "merchant": "m", "merchant_category": "c",
            "channel": "pos", "location": "DE"}  # fmt: skip

    def tx(i: int, amount: float, device: str, **attributes: object) -> Transaction:
        at = f"2026-11-22T10:{i:02d}:00+00:00"
        body = {**base, "transaction_id": f"t{i}", "amount": amount, "device_id": device,
                "timestamp": at, "attributes": attributes}  # fmt: skip
        return msgspec.json.decode(msgspec.json.encode(body), type=Transaction)

    rows = []
    for i, (amount, device, attrs) in enumerate(
        [(10.0, "d1", {"device_risk": 0.5}), (30.0, "d2", {}), (20.0, "d1", {"device_risk": 2})]
    ):
        t = tx(i, amount, device, **attrs)
        rows.append(engine.compute(0, t, t.timestamp.timestamp()))
    assert rows[0] == [0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert rows[1] == [-1.0, 10.0, 10.0, 0.0, 1.0, 0.5]  # the missing attribute: its default
    assert rows[2][:3] == [2.0, 30.0, 20.0]
    assert math.isclose(rows[2][3], 10.0) and rows[2][4:] == [2.0, 0.5]


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"name": "x", "kind": "window", "agg": "sum", "window": "1h"}, "needs `of`"),
        ({"name": "x", "kind": "window", "agg": "count", "of": "amount"}, "takes no `of`"),
        ({"name": "x", "kind": "window", "agg": "sum", "of": "merchant"}, "numeric fields"),
        ({"name": "x", "kind": "window", "agg": "count", "window": "fortnight"}, "duration"),
        ({"name": "x", "kind": "field", "field": "password"}, "attributes.<key>"),
        ({"name": "X", "kind": "hour_of_day"}, "pattern"),
        ({"name": "x", "kind": "magic"}, "does not match any of the expected tags"),
    ],
)
def test_bad_definitions_say_what_is_wrong(definition: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_feature_set({"features": [definition]})
    with pytest.raises(ValidationError, match="used twice: a"):
        parse_feature_set({"features": [{"name": "a", "kind": "hour_of_day"}] * 2})


def test_the_example_feature_files() -> None:
    """examples/features/: v1.yaml is the shipped set (version v1); every file is valid and
    computable by this scorer."""
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[2] / "examples/features"
    files = sorted(folder.glob("*.yaml"))
    assert [f.name for f in files] == ["handbook.yaml", "v1.yaml", "velocity.yaml"]
    for path in files:
        defs = parse_feature_set(yaml.safe_load(path.read_text()))
        engine = feature_sets.declared(defs).make_engine(lambda _entity: {})
        tx = transactions(4, users=5, days=1.0)[0]
        assert len(engine.compute(0, tx, tx.timestamp.timestamp())) == len(defs.names)
        if path.name == "v1.yaml":
            assert defs.version == "v1" and defs.names == V1_DEFINITIONS.names
        else:
            assert defs.version.startswith("fs-")


def test_a_set_keeps_its_version_when_the_format_grows() -> None:
    """Settings added to the format after a set was written (a window's delay, the stage's
    bound per key) count in the hash only when used: velocity.yaml, hashed before they
    existed, keeps its version, so models trained on it keep loading."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "examples/features/velocity.yaml"
    assert parse_feature_set(yaml.safe_load(path.read_text())).version == "fs-d2dab0996bd4"
