from __future__ import annotations

import msgspec
import pytest
from fraud_scorer.contract import Rejected, Transaction, TransactionDecoder

GOOD = {
    "transaction_id": "t1",
    "user_id": "u1",
    "amount": 12.5,
    "currency": "EUR",
    "timestamp": "2026-11-01T10:00:00Z",
    "merchant": "m",
    "merchant_category": "grocery",
    "channel": "pos",
    "location": "DE",
    "device_id": "d1",
}


def enc(**changes: object) -> bytes:
    doc = {**GOOD, **changes}
    return msgspec.json.encode({k: v for k, v in doc.items() if v is not ...})


def test_valid_transaction_decodes_and_keeps_unknown_fields_out_of_the_struct() -> None:
    tx = TransactionDecoder(65536).decode(enc(extra_field=1, attributes={"vip": True}))
    assert isinstance(tx, Transaction)
    assert tx.amount == 12.5 and tx.attributes == {"vip": True}
    assert tx.timestamp.timestamp() == 1793527200.0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b"\xff\xfe\x00\x01", "invalid_encoding"),
        (b'{"a":' * 5000, "invalid_json"),
        (enc(amount=...), "missing_field"),
        (enc(user_id=...), "missing_field"),
        (enc(amount="12"), "wrong_type"),
        (enc(user_id=5), "wrong_type"),
        (enc(amount=-1), "invalid_amount"),
        (enc(amount=...)[:-1] + b',"amount":1e999}', "invalid_amount"),
        (enc(amount=...)[:-1] + b',"amount":NaN}', "invalid_json"),
        (enc(timestamp="2026-11-01T10:00:00"), "invalid_timestamp"),
        (enc(timestamp="yesterday"), "invalid_timestamp"),
        (enc(currency="EURO"), "invalid_value"),
        (enc(transaction_id=""), "invalid_value"),
    ],
)
def test_bad_input_is_rejected_with_a_machine_readable_reason(payload: bytes, reason: str) -> None:
    result = TransactionDecoder(65536).decode(payload)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.detail


def test_oversize_and_foreign_content_types_are_rejected_before_parsing() -> None:
    decoder = TransactionDecoder(256)
    big = enc(merchant="x" * 300)
    assert decoder.decode(big) == Rejected("oversize", f"{len(big)} bytes > limit 256")
    result = TransactionDecoder(65536).decode(enc(), b"application/avro")
    assert isinstance(result, Rejected) and result.reason == "unsupported_content_type"
    assert isinstance(TransactionDecoder(65536).decode(enc(), b"application/json"), Transaction)


def test_tombstone_is_rejected() -> None:
    result = TransactionDecoder(65536).decode(None)
    assert isinstance(result, Rejected) and result.reason == "invalid_json"


def test_invalid_utf8_inside_a_string_is_a_dead_letter_not_a_crash() -> None:
    """Found by the hostile-input property test: msgspec raised UnicodeDecodeError here."""
    raw = (
        b'{"transaction_id":"t","user_id":"u","amount":5,"currency":"EUR",'
        b'"timestamp":"2026-11-01T00:00:00Z","merchant":"m","merchant_category":"c",'
        b'"channel":"pos","location":"DE","device_id":"\xff-1"}'
    )
    out = TransactionDecoder(4096).decode(raw)
    at = raw.index(b"\xff")
    assert out == Rejected("invalid_encoding", f"not UTF-8 at byte {at}")
