from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest
from fraud_scorer.config import DecisionSettings, RuleSpec
from fraud_scorer.features import FEATURE_NAMES, FeatureEngine
from fraud_scorer.model import load_model
from fraud_scorer.pipeline import BatchScorer
from fraud_scorer.rules import compile_rules

from tests.records import Msg


def tx(i: int, amount: float = 20.0, merchant: str = "grocery-DE-1", user: str = "u1") -> bytes:
    return msgspec.json.encode(
        {
            "transaction_id": f"t{i}",
            "user_id": user,
            "amount": amount,
            "currency": "EUR",
            "timestamp": f"2026-11-01T10:{i:02d}:00Z",
            "merchant": merchant,
            "merchant_category": "grocery",
            "channel": "pos",
            "location": "DE",
            "device_id": "d1",
            "card_number": "4111111111111111",
        }
    )


class FixedClock:
    @staticmethod
    def time() -> float:
        return 1_800_000_000.25


@pytest.fixture
def scorer(model_dir: Path) -> BatchScorer:
    rules = compile_rules(
        [
            RuleSpec(name="risky-merchant", expression="tx.merchant == 'XYZ_Merchant'"),
            RuleSpec(name="huge", expression="tx.amount > 10000.0", action="block"),
        ],
        DecisionSettings(review_at=0.999999, block_at=0.9999999),
    )
    return BatchScorer(
        model=load_model(model_dir),
        ruleset=rules,
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=4096,
        clock=FixedClock.time,
    )


def test_a_batch_becomes_decisions_alerts_and_dead_letters(scorer: BatchScorer) -> None:
    bad_headers = [("content-type", b"application/json"), ("trace", b"abc")]
    result = scorer.process(
        [
            Msg(tx(1)),
            Msg(tx(2, merchant="XYZ_Merchant")),
            Msg(b"{oops", b"k9", 2, 41, bad_headers),
            Msg(tx(3, amount=20000.0)),
        ]
    )
    decisions = [msgspec.json.decode(v) for _, v in result.decisions]
    assert [k for k, _ in result.decisions] == [b"t1", b"t2", b"t3"]
    assert [d["action"] for d in decisions] == ["allow", "review", "block"]
    assert decisions[1]["reasons"] == ["risky-merchant"]
    assert decisions[2]["reasons"][0] == "huge"
    assert all(
        d["model_version"] == "test-1" and d["rules_version"] == scorer.ruleset.version
        for d in decisions
    )
    assert decisions[0]["features"].keys() == set(FEATURE_NAMES)
    assert decisions[0]["latency_ms"] == 250.0
    assert decisions[1]["features"]["history_count"] == 1
    # alerts carry the transaction's contract fields (not unknown ones) and the same key
    assert [k for k, _ in result.alerts] == [b"t2", b"t3"]
    alert = msgspec.json.decode(result.alerts[0][1])
    assert alert["transaction"]["merchant"] == "XYZ_Merchant"
    assert "card_number" not in alert["transaction"]
    # the dead letter keeps original bytes, key and headers, and says why
    (dl,) = result.dead_letters
    assert (dl.key, dl.value, dl.reason) == (b"k9", b"{oops", "invalid_json")
    headers = dict(dl.headers)
    assert headers["dlq.reason"] == b"invalid_json"
    assert headers["dlq.source.partition"] == b"2" and headers["dlq.source.offset"] == b"41"
    assert headers["original.trace"] == b"abc"
    assert b"4111" not in b"".join(v for _, v in dl.headers if v)
    assert result.actions == {"allow": 1, "review": 1, "block": 1}
    assert result.rule_hits == {"risky-merchant": 1, "huge": 1}
    assert len(result.latencies_s) == 3 and len(result.scores) == 3


def test_model_thresholds_drive_the_action(scorer: BatchScorer, model_dir: Path) -> None:
    scorer.ruleset = compile_rules([], DecisionSettings(review_at=0.0, block_at=1.0))
    (d,) = [msgspec.json.decode(v) for _, v in scorer.process([Msg(tx(1))]).decisions]
    assert d["action"] == "review" and d["reasons"] == ["model"]
    scorer.ruleset = compile_rules([], DecisionSettings(review_at=0.0, block_at=0.0))
    (d,) = [msgspec.json.decode(v) for _, v in scorer.process([Msg(tx(2))]).decisions]
    assert d["action"] == "block"


def test_replay_builds_state_without_output(scorer: BatchScorer) -> None:
    assert scorer.replay([Msg(tx(1)), Msg(b"junk"), Msg(tx(2))]) == 2
    (d,) = [msgspec.json.decode(v) for _, v in scorer.process([Msg(tx(3))]).decisions]
    assert d["features"]["history_count"] == 2


def _session_of_another_width(tmp_path: Path, width: int) -> object:
    """A real onnxruntime session whose graph takes ``width`` features: scoring the scorer's
    rows with it fails inside onnxruntime, as a model at odds with its manifest would."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1),
        helper.make_node("Sigmoid", ["m"], ["p"]),
        helper.make_node("Concat", ["p", "p"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(nodes, "other-width", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    path = tmp_path / "other.onnx"
    onnx.save(model, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("fallback", "floor"), [("rules_only", "allow"), ("review", "review")])
def test_a_model_failure_is_decided_by_the_fallback_and_reported(
    model_dir: Path, tmp_path: Path, fallback: str, floor: str
) -> None:
    from fraud_scorer.model import Model

    good = load_model(model_dir)
    broken = Model(good.manifest, _session_of_another_width(tmp_path, len(FEATURE_NAMES) - 1))
    scorer = BatchScorer(
        model=broken,
        ruleset=compile_rules([RuleSpec(name="big", expression="tx.amount > 1000.0")]),
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=65536,
        on_model_error=fallback,  # type: ignore[arg-type]
    )
    result = scorer.process([Msg(tx(1, amount=20.0)), Msg(tx(2, amount=5000.0))])
    assert result.model_error is not None and "dimension" in result.model_error.lower()
    decided = [msgspec.json.decode(v) for _, v in result.decisions]
    assert [d["action"] for d in decided] == [floor, "review"]
    assert decided[0]["reasons"] == ["model_error"]
    assert decided[1]["reasons"] == ["big", "model_error"]
    assert {d["score"] for d in decided} == {0.0}
    assert len(result.scores) == 0  # no fake scores in the score histogram


def test_no_card_number_leaves_in_an_alert_whatever_field_hides_it(model_dir: Path) -> None:
    """Luhn-valid numbers in the merchant, the device, nested attributes and extra fields:
    alerts (which reach webhooks and the case store) carry only the contract's fields and the
    allowed extra ones, with every card number masked."""
    pans = ["4111111111111111", "5500 0000 0000 0004", "3400-0000-0000-009"]
    raw = msgspec.json.decode(tx(1, amount=5000.0, merchant=f"shop {pans[0]}"))
    raw.update(
        device_id=pans[1],
        attributes={"note": f"card {pans[2]}", "n": 4111111111111111},
        billing={"pan": pans[0], "lines": [f"x {pans[1]}"]},
        card_number=pans[0],
    )
    scorer = BatchScorer(
        model=load_model(model_dir),
        ruleset=compile_rules([RuleSpec(name="big", expression="tx.amount > 1000.0")]),
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=65536,
        carry_fields=("billing",),
    )
    result = scorer.process([Msg(msgspec.json.encode(raw))])
    (alert,) = [msgspec.json.decode(v) for _, v in result.alerts]
    carried = alert["transaction"]
    assert carried["merchant"] == "shop ****1111" and carried["device_id"] == "****0004"
    assert carried["attributes"]["note"] == "card ****0009"
    assert carried["billing"] == {"pan": "****1111", "lines": ["x ****0004"]}
    assert "card_number" not in carried
    everything = b"".join(v for _, v in [*result.decisions, *result.alerts])
    for pan in pans:
        for form in (pan, pan.replace(" ", "").replace("-", "")):
            assert form.encode() not in everything


def test_alerts_without_card_numbers_carry_the_transaction_as_it_came(model_dir: Path) -> None:
    """Most transactions hold nothing that could be a card number: the alert carries their
    bytes as they came (or only filtered). A card number spelt with JSON escapes, which the
    quick check on bytes cannot read, is still masked."""
    scorer = BatchScorer(
        model=load_model(model_dir),
        ruleset=compile_rules([RuleSpec(name="big", expression="tx.amount > 1000.0")]),
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=65536,
    )
    plain = msgspec.json.decode(tx(1, amount=5000.0))
    del plain["card_number"]
    as_it_came = msgspec.json.encode(plain).replace(b",", b", ")
    extra = msgspec.json.encode({**plain, "transaction_id": "t2", "secret": "x"})
    escaped = msgspec.json.encode(
        {**plain, "transaction_id": "t3", "merchant": "shop PAN"}
    ).replace(b"PAN", b"".join(b"\\u%04x" % ord(c) for c in "4111111111111111"))
    result = scorer.process([Msg(as_it_came), Msg(extra), Msg(escaped)])
    carried = [msgspec.json.decode(v)["transaction"] for _, v in result.alerts]
    assert b'"transaction":' + as_it_came in result.alerts[0][1]
    assert carried[1] == {**plain, "transaction_id": "t2"}
    assert carried[2]["merchant"] == "shop ****1111"


def test_alerts_carry_reason_codes_with_the_values_each_rule_read(model_dir: Path) -> None:
    """Each matching rule with the values its expression reads, in its CEL types; card numbers
    masked; decisions stay without them (alerts only); a model-only alert has the model's."""
    rules = [
        RuleSpec(name="big", expression="tx.amount > 1000.0 && !features.device_seen_before"),
        RuleSpec(
            name="shop",
            expression="tx.merchant.startsWith('shop') && tx.attributes['3ds'] == 'failed'",
        ),
        RuleSpec(name="busy", expression="features.tx_count_1h >= 0"),
    ]
    scorer = BatchScorer(
        model=load_model(model_dir),
        ruleset=compile_rules(rules, DecisionSettings(review_at=0.999999, block_at=0.9999999)),
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=65536,
    )
    doc = msgspec.json.decode(tx(1, amount=5000.0, merchant="shop 4111111111111111"))
    doc["attributes"] = {"3ds": "failed"}
    result = scorer.process([Msg(msgspec.json.encode(doc))])
    (alert,) = [msgspec.json.decode(v) for _, v in result.alerts]
    assert alert["why"]["rules"] == [
        {"rule": "big", "values": {"tx.amount": 5000.0, "features.device_seen_before": False}},
        {"rule": "shop",
         "values": {"tx.merchant": "shop ****1111", "tx.attributes.3ds": "failed"}},
        {"rule": "busy", "values": {"features.tx_count_1h": 0}},
    ]  # fmt: skip
    (decision,) = [msgspec.json.decode(v) for _, v in result.decisions]
    assert "why" not in decision

    scorer.ruleset = compile_rules([], DecisionSettings(review_at=0.0, block_at=1.0))
    (alert,) = [msgspec.json.decode(v) for _, v in scorer.process([Msg(tx(2))]).alerts]
    assert alert["reasons"] == ["model"] and set(alert["why"]) == {"model"}  # no rule to explain


def test_alerts_the_model_raised_carry_its_largest_contributions(model_dir: Path) -> None:
    """Exact TreeSHAP of the deployed model: the expected value plus every contribution (the
    five largest listed, the rest summed) is the model's raw output, so they explain the
    alert's own score."""
    model = load_model(model_dir)
    scorer = BatchScorer(
        model=model,
        ruleset=compile_rules([], DecisionSettings(review_at=0.0, block_at=1.0)),
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=65536,
    )
    result = scorer.process([Msg(tx(i, amount=40.0 * i + 1)) for i in range(4)])
    assert len(result.alerts) == 4
    for _, value in result.alerts:
        alert = msgspec.json.decode(value)
        why = alert["why"]["model"]
        shares = [c["contribution"] for c in why["top"]]
        assert len(shares) == 5 and shares == sorted(shares, key=abs, reverse=True)
        assert all(c["feature"] in model.manifest.feature_names for c in why["top"])
        total = why["base"] + sum(shares) + why["others"]
        explained = 1 / (1 + math.exp(-total)) if why["link"] == "logit" else total
        assert abs(explained - alert["score"]) < 1e-4


def test_a_long_value_a_rule_read_is_cut_in_its_reason_code(model_dir: Path) -> None:
    """An attribute as long as the message would double the alert's size in ``why``."""
    scorer = BatchScorer(
        model=load_model(model_dir),
        ruleset=compile_rules([RuleSpec(name="n", expression="size(tx.attributes['note']) > 0")]),
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=1 << 20,
    )
    doc = msgspec.json.decode(tx(1))
    doc["attributes"] = {"note": "x" * 100_000}
    (alert,) = [
        msgspec.json.decode(v) for _, v in scorer.process([Msg(msgspec.json.encode(doc))]).alerts
    ]
    assert alert["why"]["rules"][0]["values"]["tx.attributes.note"] == "x" * 256 + "..."
