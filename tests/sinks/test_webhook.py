"""Webhook delivery against a real local HTTP server that fails on purpose."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fraud_sinks.webhook import WebhookSettings, WebhookSink, payload

from tests.servers import Receiver, http_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as r:
        yield r


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def alert(i: int, action: str = "review") -> dict[str, Any]:
    return {
        "transaction_id": f"t{i}",
        "user_id": "u1",
        "action": action,
        "score": 0.93,
        "reasons": ["model"],
        "detector": "retail",
        "track": "stable",
        "model_version": "m1",
        "transaction": {"amount": 120.5, "currency": "EUR"},
    }


def sink(url: str, t: FakeTime, dead: list[tuple[str, str]], **kw: Any) -> WebhookSink:
    return WebhookSink(
        WebhookSettings(url=url, **kw),
        clock=t.clock,
        sleep=t.sleep,
        rng=random.Random(1),
        on_dead_letter=lambda a, why: dead.append((a["transaction_id"], why)),
    )


def test_retries_with_backoff_then_delivers_once(receiver: Receiver) -> None:
    t, dead = FakeTime(), []
    s = sink(receiver.url, t, dead)
    receiver.script = [503, 500, 429]
    assert s.send(alert(1)) == "delivered"
    assert s.retried == 3 and len(t.slept) == 3
    assert all(0 <= d <= 0.5 * 2**i for i, d in enumerate(t.slept))  # jittered, capped
    assert s.send(alert(1)) == "duplicate"  # a redelivered alert is not posted again
    assert len(receiver.bodies) == 1 and receiver.keys == ["t1"]
    assert receiver.bodies[0]["text"].startswith(":rotating_light: *REVIEW* transaction `t1`")


def test_client_errors_are_not_retried_and_go_to_the_dead_letter_path(receiver: Receiver) -> None:
    t, dead = FakeTime(), []
    s = sink(receiver.url, t, dead)
    receiver.script = [400]
    assert s.send(alert(2)) == "dead_letter"
    assert s.retried == 0 and dead == [("t2", "HTTP 400 (not retried)")]


def test_circuit_opens_on_a_dead_destination_and_closes_after(receiver: Receiver) -> None:
    t, dead = FakeTime(), []
    s = sink(receiver.url, t, dead, max_attempts=2, failure_threshold=2, open_seconds=60)
    receiver.script = [500] * 4
    assert s.send(alert(3)) == "dead_letter"
    assert s.send(alert(4)) == "dead_letter"
    assert s.circuit_open
    assert s.send(alert(5)) == "dead_letter"  # not even tried: the circuit is open
    assert dead[-1] == ("t5", "circuit open") and receiver.script == []
    t.now += 61
    assert s.send(alert(6)) == "delivered"  # trial delivery closes it
    assert not s.circuit_open


def test_unreachable_destination_is_retryable(receiver: Receiver) -> None:
    t, dead = FakeTime(), []
    s = sink("http://127.0.0.1:9/nothing-listens", t, dead, max_attempts=3)
    assert s.send(alert(7)) == "dead_letter"
    assert s.retried == 2


def test_rate_limit_and_filter(receiver: Receiver) -> None:
    t, dead = FakeTime(), []
    s = sink(receiver.url, t, dead, rate_per_s=2.0, burst=2, min_action="block")
    assert s.send(alert(8, "review")) == "filtered"
    for i in range(6):
        assert s.send(alert(10 + i, "block")) == "delivered"
    # 2 in the burst, then 4 more at 2/s: about 2 seconds of waiting, never a flood.
    assert sum(t.slept) == pytest.approx(2.0)
    assert payload(alert(1), "json") == alert(1)


@pytest.mark.parametrize(
    "transaction_id",
    ["tx\r\nX-Injected: 1", "tx-é-中文", "tx with spaces", "x" * 300],
    ids=["crlf", "non-latin-1", "spaces", "long"],
)
def test_hostile_transaction_ids_are_posted_with_a_hashed_idempotency_key(
    receiver: Receiver, transaction_id: str
) -> None:
    """Such an id used to become the header as is: http.client raised and the sink died."""
    import hashlib

    t, dead = FakeTime(), []
    s = sink(receiver.url, t, dead)
    assert s.send({**alert(1), "transaction_id": transaction_id}) == "delivered"
    assert s.send({**alert(1), "transaction_id": transaction_id}) == "duplicate"
    digest = hashlib.sha256(transaction_id.encode()).hexdigest()
    assert receiver.keys == [f"sha256:{digest}"] and dead == []


def test_slack_text_says_why_each_rule_matched() -> None:
    a = {
        **alert(1),
        "reasons": ["big", "model"],
        "why": {"rules": [{"rule": "big", "values": {"tx.amount": 5000.0,
                                                     "features.device_seen_before": False}}]},
    }  # fmt: skip
    text = payload(a, "slack")["text"]
    assert text.endswith("\nwhy: big: tx.amount=5000.0, features.device_seen_before=False")
    assert "why" not in payload(alert(2), "slack")["text"]
    assert payload(a, "json")["why"] == a["why"]
    a["why"]["model"] = {
        "link": "logit", "base": -3.1, "others": 0.02,
        "top": [{"feature": "amount", "value": 5000.0, "contribution": 1.234},
                {"feature": "tx_count_1h", "value": 4.0, "contribution": -0.5}],
    }  # fmt: skip
    text = payload(a, "slack")["text"]
    assert text.endswith("; model: amount=5000.0 (+1.234), tx_count_1h=4.0 (-0.500)")


def test_reason_codes_reach_both_styles_as_a_sink_decodes_them() -> None:
    """From the alert's bytes, as the sink reads them off the topic (nested structs and all)."""
    from fraud_sinks.messages import as_dict, decode_decision

    wire = {
        **alert(3),
        "model_version": "m1", "rules_version": "r1", "detector": "d", "track": "stable",
        "event_time": 1.0, "scored_at": 2.0, "latency_ms": 1.0,
        "why": {"rules": [{"rule": "big", "values": {"tx.amount": 5000.0}}],
                "model": {"link": "logit", "base": -3.0, "others": 0.1,
                          "top": [{"feature": "amount", "value": 5000.0, "contribution": 2.5}]}},
    }  # fmt: skip
    d = decode_decision(json.dumps(wire).encode())
    as_sent = as_dict(d, {"amount": 5000.0, "currency": "EUR"})
    assert json.loads(json.dumps(payload(as_sent, "json")))["why"] == wire["why"]
    assert payload(as_sent, "slack")["text"].endswith(
        "why: big: tx.amount=5000.0; model: amount=5000.0 (+2.500)"
    )
