from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import celpy
import pytest
from fraud_scorer.config import DecisionSettings, RuleSpec
from fraud_scorer.contract import Transaction
from fraud_scorer.features import FEATURE_NAMES, FEATURES
from fraud_scorer.rules import RuleCompileError, compile_rules
from hypothesis import given, settings
from hypothesis import strategies as st


def rule(expr: str, name: str = "r", action: str = "review") -> RuleSpec:
    return RuleSpec(name=name, expression=expr, action=action)  # type: ignore[arg-type]


def make_tx(**kw: Any) -> Transaction:
    base: dict[str, Any] = {
        "transaction_id": "t",
        "user_id": "u",
        "amount": 450.0,
        "currency": "EUR",
        "timestamp": datetime(2026, 11, 1, tzinfo=UTC),
        "merchant": "XYZ_Merchant",
        "merchant_category": "electronics",
        "channel": "online",
        "location": "DE",
        "device_id": "d",
    }
    return Transaction(**{**base, **kw})


def feats(**kw: float) -> list[float]:
    row = [0.0] * len(FEATURE_NAMES)
    for k, v in kw.items():
        row[FEATURE_NAMES.index(k)] = float(v)
    return row


ARCH_RULES = [
    rule("tx.amount > 400.0", "high-amount"),
    rule("tx.merchant in ['XYZ_Merchant', 'UnknownShop']", "risky-merchant"),
    rule("features.location_changed && features.seconds_since_last < 3600.0", "jump", "block"),
]


def test_rules_from_the_architecture_sketch_compile_and_match() -> None:
    rs = compile_rules(ARCH_RULES)
    errors = [0, 0, 0]
    mask = rs.evaluate(make_tx(), feats(location_changed=1, seconds_since_last=60), errors)
    assert rs.names_of(mask) == ["high-amount", "risky-merchant", "jump"]
    assert mask & rs.block_mask()
    assert rs.evaluate(make_tx(amount=5.0, merchant="Shop"), feats(), errors) == 0
    assert errors == [0, 0, 0]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("tx.amount >", "syntax error at column"),
        ("tx.amount == 400", "cannot compare double with int"),
        ("tx.amount + 1 > 2.0", "CEL does not mix int and double"),
        ("tx.cardnumber == 'x'", "tx has no field 'cardnumber'"),
        ("features.velocity > 1.0", "unknown feature 'velocity'"),
        ("user.age > 1", "unknown variable 'user'"),
        ("tx.amount", "must be a boolean expression"),
        ("tx.merchant in 'abc'", "must be a list or map"),
        ("tx.merchant.matches('(')", "invalid regular expression"),
        ("[1, 2].exists(x, x > 1)", "macro exists() is not supported"),
        ("tx.amount && true", "must be bool"),
        ("timestamp('2020-01-01T00:00:00Z') > 1", "unsupported function timestamp"),
    ],
)
def test_invalid_rules_are_rejected_with_an_actionable_message(
    expression: str, message: str
) -> None:
    with pytest.raises(RuleCompileError, match="rule 'bad'") as err:
        compile_rules([rule("tx.amount > 1.0", "good"), rule(expression, "bad")])
    assert message in str(err.value)


def test_evaluation_errors_do_not_match_and_are_counted() -> None:
    rs = compile_rules(
        [
            rule("tx.lat > 10.0", "needs-lat"),
            rule("tx.attributes.tier == 'gold'", "gold"),
            rule("has(tx.lat) && tx.lat > 10.0", "safe"),
        ]
    )
    errors = [0, 0, 0]
    assert rs.evaluate(make_tx(), feats(), errors) == 0
    assert errors == [1, 1, 0]
    assert rs.names_of(
        rs.evaluate(make_tx(lat=50.0, attributes={"tier": "gold"}), feats(), errors)
    ) == ["needs-lat", "gold", "safe"]


def test_version_is_a_content_hash() -> None:
    a = compile_rules(ARCH_RULES)
    assert compile_rules(list(ARCH_RULES)).version == a.version
    assert compile_rules(ARCH_RULES, DecisionSettings(review_at=0.5)).version != a.version
    assert compile_rules(ARCH_RULES[:2]).version != a.version


# --- parity with the reference CEL interpreter (cel-python) --------------------------------

PARITY_EXPRESSIONS = [
    "tx.amount > 400.0",
    "tx.amount >= 100 && tx.amount < 1000",
    "tx.merchant in ['XYZ_Merchant', 'UnknownShop'] || tx.location == 'US'",
    "!features.device_seen_before && features.travel_speed_kmh > 800.0",
    "features.tx_count_1h >= 4 && tx.amount < 5.0 && features.card_not_present",
    "features.tx_count_24h / 3 >= 2 || features.tx_count_24h % 5 == 1",
    "tx.amount / features.amount_to_mean > 250.0",
    "(tx.amount * 2.0 - 10.0) > features.amount_sum_24h"
    " ? features.history_count > 1 : tx.amount > 1.0",
    "tx.merchant.startsWith('XYZ') || tx.device_id.endsWith('9') || tx.channel.contains('on')",
    "size(tx.merchant) > 8 && tx.merchant.matches('^[A-Z]')",
    "-tx.amount < -50.0 && int(tx.amount) % 2 == 0",
    "double(features.history_count) > 2.5 && string(features.history_count) != '3'",
    "tx.location in ['US', 'BR'] && features.location_changed",
]

_tx_strategy = st.fixed_dictionaries(
    {
        "amount": st.floats(0, 5000, allow_nan=False).map(lambda v: round(v, 2)),
        "merchant": st.sampled_from(["XYZ_Merchant", "UnknownShop", "grocery-DE-1", "Shop9"]),
        "location": st.sampled_from(["DE", "US", "BR", "FR"]),
        "device_id": st.sampled_from(["d1", "dev-9", "x"]),
        "channel": st.sampled_from(["online", "pos", "app"]),
    }
)
_feature_strategy = st.fixed_dictionaries(
    {
        f.name: (
            st.booleans().map(float)
            if f.cel_type == "bool"
            else st.integers(0, 30).map(float)
            if f.cel_type == "int"
            else st.floats(0.01, 5000, allow_nan=False)
        )
        for f in FEATURES
    }
)


def _cel_reference(expression: str, tx: Transaction, row: list[float]) -> bool | None:
    env = celpy.Environment()
    program = env.program(env.compile(expression))
    typed: dict[str, Any] = {}
    for f, v in zip(FEATURES, row, strict=True):
        typed[f.name] = bool(v) if f.cel_type == "bool" else int(v) if f.cel_type == "int" else v
    activation = {
        "tx": celpy.json_to_cel(
            {k: getattr(tx, k) for k in ("amount", "merchant", "location", "device_id", "channel")}
        ),
        "features": celpy.json_to_cel(typed),
    }
    try:
        result = program.evaluate(activation)
    except celpy.CELEvalError:
        return None
    if isinstance(result, celpy.CELEvalError):
        return None
    return bool(result)


@settings(max_examples=60, deadline=None)
@given(tx_fields=_tx_strategy, feature_values=_feature_strategy)
def test_compiled_rules_agree_with_the_cel_interpreter(
    tx_fields: dict[str, Any], feature_values: dict[str, float]
) -> None:
    rs = compile_rules([rule(e, f"r{i}") for i, e in enumerate(PARITY_EXPRESSIONS)])
    tx = make_tx(**tx_fields)
    row = [feature_values[n] for n in FEATURE_NAMES]
    errors = [0] * len(PARITY_EXPRESSIONS)
    mask = rs.evaluate(tx, row, errors)
    for i, expression in enumerate(PARITY_EXPRESSIONS):
        expected = _cel_reference(expression, tx, row)
        if expected is None:  # the interpreter raised: we must not match, and count an error
            assert not mask >> i & 1, expression
        else:
            assert bool(mask >> i & 1) == expected, expression


def test_rules_see_every_transaction_field_but_the_timestamp_typed_from_the_struct() -> None:
    """``TX_FIELDS`` is read from :class:`Transaction`: a field added there is visible to
    rules with its CEL type, and fields that may be absent are the ones defaulting to None."""
    import msgspec
    from fraud_scorer.contract import Transaction
    from fraud_scorer.rules import _OPTIONAL_TX_FIELDS, TX_FIELDS

    fields = {f.name: f for f in msgspec.structs.fields(Transaction)}
    assert set(TX_FIELDS) == set(fields) - {"timestamp"}
    assert TX_FIELDS["amount"] == "double" and TX_FIELDS["attributes"] == "map"
    assert TX_FIELDS["merchant"] == "string" and TX_FIELDS["lat"] == "double"
    assert {n for n, f in fields.items() if f.default is None} == _OPTIONAL_TX_FIELDS


def test_matches_is_re2_so_no_field_can_make_a_rule_backtrack() -> None:
    """Python's backtracking ``re`` takes 0.3 s for this pattern on 22 characters and doubles per
    character: on a 256-character merchant it would never return. RE2 answers at once."""
    rs = compile_rules([rule("tx.merchant.matches('^(a+)+$')")])
    errors = [0]
    assert rs.evaluate(make_tx(merchant="a" * 255 + "b"), feats(), errors) == 0
    assert rs.evaluate(make_tx(merchant="a" * 255), feats(), errors) == 1
    assert errors == [0]


def test_patterns_re2_cannot_run_in_linear_time_are_refused_at_compile_time() -> None:
    with pytest.raises(RuleCompileError, match="RE2 syntax"):
        compile_rules([rule("tx.merchant.matches('(a)\\\\1')")])


@pytest.mark.parametrize(
    "expression",
    [
        "tx.attributes['s'] * 1000000000 == 'x'",  # str * int: gigabytes in Python, an error in CEL
        "tx.attributes['n'] * tx.attributes['s'] == 'x'",
        "tx.attributes['n'] + tx.attributes['f'] > 1.0",  # int + double: CEL does not mix them
        "tx.attributes['b'] + tx.attributes['n'] > 0",  # bool is not a number
    ],
)
def test_untyped_arithmetic_follows_cel_overloads(expression: str) -> None:
    rs = compile_rules([rule(expression)])
    errors = [0]
    tx = make_tx(attributes={"s": "ab", "n": 3, "f": 1.5, "b": True})
    assert rs.evaluate(tx, feats(), errors) == 0
    assert errors == [1]


def test_untyped_arithmetic_that_cel_allows_still_works() -> None:
    rs = compile_rules(
        [
            rule("tx.attributes['n'] * 2 == 6", "ints"),
            rule("tx.attributes['s'] + 'c' == 'abc'", "s"),
        ]
    )
    errors = [0, 0]
    tx = make_tx(attributes={"s": "ab", "n": 3})
    assert rs.names_of(rs.evaluate(tx, feats(), errors)) == ["ints", "s"]
    assert errors == [0, 0]


@pytest.mark.parametrize(
    ("expression", "refusal"),
    [
        ("(" * 300 + "true" + ")" * 300, "nested too deeply"),
        ("!" * 3000 + "true", "nested too deeply"),
        ("tx.amount > 1.0" + " && tx.amount > 1.0" * 200, "nested too deeply"),
        ("tx.amount > 1.0 ||" * 300 + " true", "more than 4096"),
    ],
    ids=["parentheses", "negations", "long-conjunction", "too-long"],
)
def test_pathological_expressions_are_refused_not_crashed_on(expression: str, refusal: str) -> None:
    """A hand-edited ConfigMap skips the CRD's limits: the compiler refuses, never raises
    RecursionError (which ended the scorer on reload, and looped kopf forever)."""
    unchecked = RuleSpec.model_construct(name="r", expression=expression, action="review")
    with pytest.raises(RuleCompileError, match=refusal):
        compile_rules([unchecked])
