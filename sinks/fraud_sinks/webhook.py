"""Webhook delivery of alerts (Slack-compatible or generic JSON), built to survive a bad
destination without hurting anyone else.

- **Retries** with exponential backoff and full jitter on timeouts, connection errors, 429 and
  5xx (a 4xx other than 429 is the payload's fault: no retry, straight to the dead-letter path).
- **Circuit breaker**: after ``failure_threshold`` consecutive failed deliveries the circuit
  opens and deliveries go straight to the dead-letter path for ``open_seconds``; then one trial
  delivery decides whether it closes again.
- **Rate limit**: a token bucket (``rate_per_s``, ``burst``), so an alert storm cannot flood a
  chat channel.
- **Idempotency**: a transaction already delivered is never posted again (redelivered Kafka
  alerts), remembered in a bounded LRU set; the ``Idempotency-Key`` header carries the
  transaction id for receivers that deduplicate too.

Time and sleeping are injected, so every behaviour is tested without waiting.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any, Literal

from fraud_runtime.trace import TraceHeaders

Outcome = Literal["delivered", "duplicate", "filtered", "dead_letter"]
_ACTIONS = {"review": 1, "block": 2}


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    style: Literal["slack", "json"] = "slack"
    min_action: Literal["review", "block"] = "review"
    timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    failure_threshold: int = 5
    open_seconds: float = 60.0
    rate_per_s: float = 5.0
    burst: int = 20
    remember: int = 100_000

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError("webhook URL must be http(s)://")


def payload(alert: dict[str, Any], style: str) -> dict[str, Any]:
    """The body to post. Slack's incoming webhooks take ``text`` (plus blocks); the generic
    style is the decision itself. Card numbers never reach here: the scorer's alert carries
    the transaction as produced, and producers must not put PANs in it."""
    if style == "json":
        return alert
    reasons = ", ".join(alert.get("reasons") or []) or "model"
    tx = alert.get("transaction") or {}
    text = (
        f":rotating_light: *{alert['action'].upper()}* transaction `{alert['transaction_id']}` "
        f"(user `{alert['user_id']}`, {tx.get('amount', '?')} {tx.get('currency', '')}) "
        f"score {alert['score']:.3f} - {reasons} [{alert['detector']}/{alert['track']}, "
        f"model {alert['model_version']}]"
    )
    reasons_of = alert.get("why") or {}
    why = [
        f"{r['rule']}: " + ", ".join(f"{k}={v}" for k, v in (r.get("values") or {}).items())
        for r in (reasons_of.get("rules") or [])
    ]
    if model := reasons_of.get("model"):
        why.append(
            "model: "
            + ", ".join(
                f"{c['feature']}={c['value']} ({c['contribution']:+.3f})" for c in model["top"]
            )
        )
    if why:
        text += "\nwhy: " + "; ".join(why)
    return {"text": text}


class _Retryable(Exception):
    pass


class _Permanent(Exception):
    pass


@dataclass
class WebhookSink:
    settings: WebhookSettings
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    on_dead_letter: Callable[[dict[str, Any], str], None] = lambda _alert, _why: None
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _consecutive_failures: int = 0
    _open_until: float = 0.0
    _tokens: float = -1.0
    _refilled_at: float = 0.0

    def send(self, alert: dict[str, Any], trace: TraceHeaders | None = None) -> Outcome:
        """Post ``alert`` (at most once per transaction), with its W3C trace context
        (``trace``: the Kafka record's) as HTTP headers."""
        s = self.settings
        if _ACTIONS.get(alert.get("action", ""), 0) < _ACTIONS[s.min_action]:
            return "filtered"
        key = alert["transaction_id"]
        if key in self._seen:
            self._seen.move_to_end(key)
            return "duplicate"
        if self.clock() < self._open_until:
            return self._dead_letter(alert, "circuit open")
        self._take_token()
        try:
            self._post_with_retries(alert, trace)
        except (_Retryable, _Permanent) as exc:
            self._consecutive_failures += 1
            if self._consecutive_failures >= s.failure_threshold:
                self._open_until = self.clock() + s.open_seconds
            return self._dead_letter(alert, str(exc))
        self._consecutive_failures = 0
        self._open_until = 0.0
        self._remember(key)
        self.delivered += 1
        return "delivered"

    @property
    def circuit_open(self) -> bool:
        return self.clock() < self._open_until

    def _post_with_retries(self, alert: dict[str, Any], trace: TraceHeaders | None) -> None:
        s = self.settings
        body = json.dumps(payload(alert, s.style)).encode()
        extra = {name: value.decode("ascii", "replace") for name, value in trace or ()}
        for attempt in range(1, s.max_attempts + 1):
            try:
                self._post(body, alert["transaction_id"], extra)
                return
            except _Retryable:
                if attempt == s.max_attempts:
                    raise
                self.retried += 1
                cap = min(s.backoff_max_s, s.backoff_base_s * 2 ** (attempt - 1))
                self.sleep(self.rng.uniform(0, cap))  # full jitter

    def _post(self, body: bytes, key: str, extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key(key)}
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in the settings
            self.settings.url, data=body, method="POST", headers={**headers, **(extra or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}") from exc
            raise _Permanent(f"HTTP {exc.code} (not retried)") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException) as exc:
            raise _Retryable(str(getattr(exc, "reason", exc))) from exc
        except (ValueError, UnicodeError) as exc:  # a request http.client will not send
            raise _Permanent(f"cannot send: {type(exc).__name__}") from exc

    def _take_token(self) -> None:
        s, now = self.settings, self.clock()
        if self._tokens < 0:
            self._tokens, self._refilled_at = float(s.burst), now
        self._tokens = min(float(s.burst), self._tokens + (now - self._refilled_at) * s.rate_per_s)
        self._refilled_at = now
        if self._tokens < 1.0:
            self.sleep((1.0 - self._tokens) / s.rate_per_s)
            self._tokens = 1.0
            self._refilled_at = self.clock()
        self._tokens -= 1.0

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        if len(self._seen) > self.settings.remember:
            self._seen.popitem(last=False)

    def _dead_letter(self, alert: dict[str, Any], why: str) -> Outcome:
        self.failed += 1
        self.on_dead_letter(alert, why)
        return "dead_letter"


_HEADER_SAFE = frozenset(range(0x21, 0x7F))  # visible ASCII: no spaces, CR, LF or non-Latin-1


def idempotency_key(transaction_id: str) -> str:
    """The ``Idempotency-Key`` header for a transaction: its id when that is a safe header
    value, else ``sha256:<hex of the UTF-8 id>`` (stable, so receivers still deduplicate). An id
    with CR/LF or non-Latin-1 characters made http.client raise, and killed the sink."""
    raw = transaction_id.encode("utf-8", "surrogatepass")
    if 0 < len(raw) <= 200 and all(b in _HEADER_SAFE for b in raw):
        return transaction_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()
