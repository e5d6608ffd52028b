"""Card numbers are masked in logs and in dead letters' metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
from fraud_runtime.logs import configure_logging
from fraud_runtime.redact import luhn_ok, mask_pans, may_hold_pans
from fraud_scorer.config import DecisionSettings
from fraud_scorer.features import FeatureEngine
from fraud_scorer.model import load_model
from fraud_scorer.pipeline import BatchScorer
from fraud_scorer.rules import compile_rules

from tests.records import Msg

PAN = "4111111111111111"  # a Luhn-valid test Visa number


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"card {PAN} declined", "card ****1111 declined"),
        ("card 4111 1111 1111 1111 declined", "card ****1111 declined"),
        ("card 4111-1111-1111-1111", "card ****1111"),
        ("order 4111111111111112", "order 4111111111111112"),  # not Luhn-valid: not a card
        ("amount 1234.56 at 2026-11-01", "amount 1234.56 at 2026-11-01"),
        ("id 123456789012", "id 123456789012"),  # 12 digits: too short for a PAN
        (f"x{PAN}0", f"x{PAN}0"),  # part of a longer number
    ],
)
def test_mask_pans(text: str, masked: str) -> None:
    assert mask_pans(text) == masked


@pytest.mark.parametrize(
    ("data", "may"),
    [
        (b'{"merchant": "shop 4111 1111-1111 1111"}', True),
        (b'{"n": 4111111111111111}', True),  # a card number sent as a number
        (b'{"m": "\\u0034111111111111111"}', True),  # a digit spelt as an escape
        ('{"m": "\u0664\u0661"}'.encode(), True),  # other scripts' digits: not ASCII
        (b'{"id": "tx-21-000000000", "t": "2026-11-02T00:00:01Z", "x": 1234.56}', False),
        (b'{"id": "123456789012"}', False),  # 12 digits: too short for a card number
    ],
)
def test_may_hold_pans_never_misses_a_card_number(data: bytes, may: bool) -> None:
    assert may_hold_pans(data) is may
    if not may:  # the quick check says no: the slow walk finds nothing to mask either
        assert mask_pans(data.decode()) == data.decode()


def test_luhn() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")


def test_log_lines_never_carry_a_card_number(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    structlog.get_logger("t").warning(
        "consumer error", error=f"bad record card={PAN}", nested={"pan": [PAN]}
    )
    line = capsys.readouterr().out
    assert PAN not in line and "****1111" in line
    assert json.loads(line)["nested"] == {"pan": ["****1111"]}


def test_dead_letter_metadata_masks_a_card_number_the_producer_put_in_a_header(
    model_dir: Path,
) -> None:
    """The content-type header is echoed in the rejection detail; a PAN in it stays masked
    there, while the dead letter's value and original headers keep the bytes as sent."""
    scorer = BatchScorer(
        model=load_model(model_dir),
        ruleset=compile_rules([], DecisionSettings()),
        engine=FeatureEngine(),
        detector="d",
        track="stable",
        max_message_bytes=4096,
    )
    value = json.dumps({"card_number": PAN}).encode()
    msg = Msg(value, _headers=[("content-type", f"text/{PAN}".encode())])
    (dead,) = scorer.process([msg]).dead_letters  # type: ignore[list-item]
    headers = dict(dead.headers)
    assert dead.reason == "unsupported_content_type"
    dlq = b"".join(v for k, v in dead.headers if k.startswith("dlq."))
    assert PAN.encode() not in dlq and b"****1111" in headers["dlq.detail"]
    assert dead.value == value and headers["original.content-type"] == f"text/{PAN}".encode()
