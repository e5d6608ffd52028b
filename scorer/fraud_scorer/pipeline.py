"""Scoring one batch: decode -> features -> model -> rules -> decisions. No I/O here.

:meth:`BatchScorer.process` takes consumed records and returns what must be produced
(decisions, alerts, dead letters) plus the numbers the metrics need, so tests feed a list in and
compare a list out, and the Kafka layer stays thin.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
from fraud_runtime.dead_letters import bounded, dead_letter_headers
from fraud_runtime.logs import first_line
from fraud_runtime.redact import mask_pans, may_hold_pans
from fraud_runtime.trace import TraceHeaders, trace_context

from fraud_scorer.config import ModelFallback, SliceSettings
from fraud_scorer.contract import (
    Contribution,
    Decision,
    ModelReason,
    Rejected,
    RuleReason,
    Transaction,
    TransactionDecoder,
    Why,
    decision_type,
    features_type,
    user_bucket,
)
from fraud_scorer.entity_features import JoinedEngine
from fraud_scorer.feature_batch import batch_features
from fraud_scorer.feature_sets import V1, Engine
from fraud_scorer.model import Model
from fraud_scorer.rules import RuleSet

KafkaHeaders = list[tuple[str, bytes]]
MODEL = "model"  # the reason a decision carries when the model's score crossed a threshold
TOP_CONTRIBUTIONS = 5  # features listed in an alert's model reason codes
REASON_TEXT_CHARS = 256  # text a rule read, as its reason code shows it
T = TypeVar("T")


class Record(Protocol):
    """The parts of a consumed Kafka message the scorer reads (confluent_kafka.Message)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def topic(self) -> str | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> Any: ...


@dataclass
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: KafkaHeaders
    reason: str


@dataclass
class BatchResult:
    decisions: list[tuple[bytes, bytes]] = field(default_factory=list)
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    rule_hits: Counter[str] = field(default_factory=Counter)
    rule_errors: Counter[str] = field(default_factory=Counter)
    latencies_s: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    scores: npt.NDArray[np.float32] = field(default_factory=lambda: np.empty(0, np.float32))
    other_track: int = 0  # valid transactions of users outside this track's slice
    model_error: str | None = None  # why the model could not score this batch
    rejected_elsewhere: int = 0  # bad messages left for the stable track to dead-letter
    # W3C trace headers of the inputs that had them, by transaction key: their decision and
    # alert carry them (empty for most traffic: the fast path produces without headers).
    traces: dict[bytes, TraceHeaders] = field(default_factory=dict)


def _take(items: list[T], indexes: list[int]) -> list[T]:
    return [items[i] for i in indexes]


def _content_type(headers: Any) -> bytes | None:
    if headers:
        for name, value in headers:
            if name.lower() == "content-type":
                return value or b""
    return None


class BatchScorer:
    """Holds what scoring needs; ``ruleset`` may be swapped between batches (hot reload)."""

    def __init__(
        self,
        *,
        model: Model,
        ruleset: RuleSet,
        engine: Engine,
        detector: str,
        track: str,
        max_message_bytes: int,
        include_features: bool = True,
        alert_includes_transaction: bool = True,
        carry_fields: tuple[str, ...] = (),
        alerts: bool = True,
        dead_letters: bool = True,
        slice_: SliceSettings | None = None,
        on_model_error: ModelFallback = "rules_only",
        clock: Callable[[], float] = time.time,
        feature_names: tuple[str, ...] = V1.names,
    ) -> None:
        self.model = model
        self.on_model_error = on_model_error
        self.ruleset = ruleset
        self.engine = engine
        self.detector = detector
        self.track = track
        self.decoder = TransactionDecoder(max_message_bytes)
        self.include_features = include_features
        self.alert_includes_transaction = alert_includes_transaction
        contract = {f.name for f in msgspec.structs.fields(Transaction)}
        self.carried = frozenset(contract) | frozenset(carry_fields)
        self.alerts = alerts
        self.dead_letters = dead_letters
        self.slice = slice_ or SliceSettings()  # swapped between batches by hot reload
        self._encode = msgspec.json.Encoder().encode
        self._features = features_type(feature_names)
        self._decision: Callable[..., Decision] = decision_type(self._features)
        self._time = clock

    def replay(self, records: list[Record]) -> int:
        """Fold already-decided records into feature state (state rebuild); returns count.
        Only the per-user state is rebuilt: a joined engine's table values are not needed."""
        engine, decode = self.engine, self.decoder.decode
        compute = engine.user.compute if isinstance(engine, JoinedEngine) else engine.compute
        n = 0
        for msg in records:
            tx = decode(msg.value(), _content_type(msg.headers()))
            if type(tx) is Transaction:
                compute(msg.partition() or 0, tx, tx.timestamp.timestamp())
                n += 1
        return n

    def process(self, records: list[Record]) -> BatchResult:
        out = BatchResult()
        decode = self.decoder.decode
        txs: list[Transaction] = []
        partitions: list[int] = []
        times: list[float] = []
        raws: list[bytes] = []
        kafka_ms: list[int] = []
        traced: dict[str, TraceHeaders] = {}
        for msg in records:
            value, headers = msg.value(), msg.headers()
            tx = decode(value, _content_type(headers) if headers else None)
            if headers and type(tx) is Transaction and (ctx := trace_context(headers)):
                traced[tx.transaction_id] = ctx
            if type(tx) is not Transaction:
                assert isinstance(tx, Rejected)
                if self.dead_letters:
                    out.dead_letters.append(self._dead_letter(msg, tx))
                else:
                    out.rejected_elsewhere += 1
                continue
            txs.append(tx)
            partitions.append(msg.partition() or 0)
            times.append(tx.timestamp.timestamp())
            raws.append(value)  # type: ignore[arg-type]
            kafka_ms.append(msg.timestamp()[1])
        if not txs:
            return out
        # State for every user, those of other tracks too (a warm handover on a slice change).
        features = batch_features(self.engine, partitions, txs, times)
        rows, matrix = features.rows, features.matrix
        start, end = self.slice.start, self.slice.end
        if not (start == 0 and end == 100):
            keep = [i for i, tx in enumerate(txs) if start <= user_bucket(tx.user_id) < end]
            out.other_track = len(txs) - len(keep)
            if not keep:
                return out
            txs, rows, raws = _take(txs, keep), _take(rows, keep), _take(raws, keep)
            times, kafka_ms, matrix = _take(times, keep), _take(kafka_ms, keep), matrix[keep]
        try:
            scores = self.model.score(matrix.astype(np.float32))
            out.scores = scores
        except Exception as exc:  # onnxruntime raises its own types; no batch may stop scoring
            out.model_error = first_line(exc)[:512]
            scores = np.zeros(len(rows), dtype=np.float32)  # published as 0, never judged
        now = self._time()
        out.latencies_s = now - np.asarray(kafka_ms) / 1000.0
        latency_ms = np.round(out.latencies_s * 1000.0, 3).tolist()
        self._decide(out, txs, rows, raws, times, scores, latency_ms, now, matrix)
        if traced:
            kept = {tx.transaction_id for tx in txs}
            out.traces = {t.encode(): ctx for t, ctx in traced.items() if t in kept}
        return out

    def _decide(
        self,
        out: BatchResult,
        txs: list[Transaction],
        rows: list[list[float]],
        raws: list[bytes],
        event_ts: list[float],
        scores: npt.NDArray[np.float32],
        latency_ms: list[float],
        now: float,
        matrix: npt.NDArray[np.float64],
    ) -> None:
        rs = self.ruleset  # read once: a reload between batches never splits one
        errors = [0] * len(rs.rules)
        encode, decisions, alerts = self._encode, out.decisions, out.alerts
        model_version, rules_version = self.model.version, rs.version
        detector, track = self.detector, self.track
        make, values = self._decision, self._features if self.include_features else None
        score_list = scores.tolist()
        actions, reasons = judge(
            rs, txs, rows, score_list, errors, out.rule_hits,
            model_failed=out.model_error is not None, on_model_error=self.on_model_error,
        )  # fmt: skip
        out.actions.update(actions)
        model_why = self._model_reasons(actions, reasons, matrix) if self.alerts else {}
        for i, score in enumerate(score_list):
            tx, row, action = txs[i], rows[i], actions[i]
            # Positional, in Decision's field order (keywords cost 1 us a decision).
            decision = make(
                tx.transaction_id, tx.user_id, action, round(score, 6), reasons[i], model_version,
                rules_version, detector, track, event_ts[i], now, latency_ms[i],
                values(*row) if values is not None else None,
            )  # fmt: skip
            key = tx.transaction_id.encode()
            decisions.append((key, encode(decision)))
            if action != "allow" and self.alerts:
                if self.alert_includes_transaction:
                    decision.transaction = msgspec.Raw(self._carried(raws[i]))
                rules_fired, model_reason = explain(rs, reasons[i], tx, row), model_why.get(i)
                if rules_fired or model_reason is not None:
                    decision.why = Why(rules=rules_fired, model=model_reason)
                alerts.append((key, encode(decision)))
        for rule, count in zip(rs.rules, errors, strict=True):
            if count:
                out.rule_errors[rule.name] += count

    def _model_reasons(
        self, actions: list[str], reasons: list[list[str]], matrix: npt.NDArray[np.float64]
    ) -> dict[int, ModelReason]:
        """The model's reason codes of the alerts it raised (exact TreeSHAP, for the rows the
        model alerted on only: a few percent of traffic)."""
        if self.model.explainer is None:  # an isolation forest: no trees to explain
            return {}
        raised = [
            i for i, (a, why) in enumerate(zip(actions, reasons, strict=True))
            if a != "allow" and MODEL in why
        ]  # fmt: skip
        explained = self.model.explain(matrix[raised]) if raised else None
        if explained is None:
            return {}
        names, inputs, link = explained.names, explained.inputs, explained.link
        out = {}
        for row, (i, phi) in enumerate(zip(raised, explained.contributions, strict=True)):
            shares = phi[:-1]
            top = np.argsort(-np.abs(shares), kind="stable")[:TOP_CONTRIBUTIONS]
            values = inputs[row]
            out[i] = ModelReason(
                link,
                round(float(phi[-1]), 6),
                [
                    Contribution(
                        names[k],
                        float(values[k]) if math.isfinite(values[k]) else None,
                        round(float(shares[k]), 6),
                    )
                    for k in top
                ],
                round(float(shares.sum() - shares[top].sum()), 6),
            )
        return out

    def _carried(self, raw: bytes) -> bytes:
        """The transaction as an alert carries it: the contract's fields and the allowed extra
        ones, every string with card numbers masked (alerts reach webhooks and the case store:
        PCI DSS requirement 3). Most transactions hold nothing that could be a card number:
        those are only filtered, or kept as they came when every field is carried."""
        doc = msgspec.json.decode(raw)
        if not may_hold_pans(raw):
            if doc.keys() <= self.carried:
                return raw
            return self._encode({k: v for k, v in doc.items() if k in self.carried})
        kept = {k: _masked(v) for k, v in doc.items() if k in self.carried}
        return self._encode(kept)

    def _dead_letter(self, msg: Record, rejected: Rejected) -> DeadLetter:
        headers = dead_letter_headers(
            msg, rejected.reason, rejected.detail, self.detector, track=self.track
        )
        original = msg.headers() or ()
        for name, value in original:
            headers.append((f"original.{name}", value or b""))
        headers += trace_context(original) or []  # the trace goes on, under its own name
        value, headers = bounded(msg.value(), headers)
        return DeadLetter(msg.key(), value, headers, rejected.reason)


def judge(
    rs: RuleSet,
    txs: Sequence[Transaction],
    rows: Sequence[Sequence[float]],
    scores: Sequence[float],
    errors: list[int],
    hits: Counter[str],
    *,
    model_failed: bool = False,
    on_model_error: ModelFallback = "rules_only",
) -> tuple[list[str], list[list[str]]]:
    """Each transaction's action and reasons, as every scorer (and ``fraud-rules backtest``)
    decides them: the rules that matched, in order (``block`` if any of them blocks, else
    ``review``), then the model's score against the thresholds (reason ``model``). When the model
    failed on the batch, the reason is ``model_error`` and the action comes from the rules alone
    (at least ``review`` if ``on_model_error`` says so). ``errors[i]`` counts rule ``i``'s
    evaluation failures; ``hits`` the matches per rule name."""
    evaluate, names_of, block_mask = rs.evaluate, rs.names_of, rs.block_mask()
    review_at, block_at = rs.decision.review_at, rs.decision.block_at
    floor = "review" if model_failed and on_model_error == "review" else "allow"
    actions: list[str] = []
    reasons: list[list[str]] = []
    for tx, row, score in zip(txs, rows, scores, strict=True):
        mask = evaluate(tx, row, errors)
        if mask:
            why = names_of(mask)
            hits.update(why)
            action = "block" if mask & block_mask else "review"
        else:
            why = []
            action = "allow"
        if model_failed:
            why.append("model_error")
            if action == "allow":
                action = floor
        elif score >= block_at:
            action = "block"
            why.append(MODEL)
        elif score >= review_at:
            if action == "allow":
                action = "review"
            why.append(MODEL)
        actions.append(action)
        reasons.append(why)
    return actions, reasons


def explain(
    rs: RuleSet, reasons: list[str], tx: Transaction, row: Sequence[float]
) -> list[RuleReason]:
    """The reason codes of the rules among ``reasons``: each with the values its expression
    reads, as the rule saw them (features in their CEL type; text masked of card numbers)."""
    out = []
    for name in reasons:
        rule = rs.by_name.get(name)
        if rule is None:  # "model", "model_error"
            continue
        values: dict[str, Any] = {}
        for kind, key in rule.reads:
            if kind == "features":
                index, cel_type = rs.feature_types[key]
                v = row[index]
                values[f"features.{key}"] = (
                    (v != 0.0) if cel_type == "bool"
                    else int(v) if cel_type == "int" and math.isfinite(v)
                    else v if math.isfinite(v) else None
                )  # fmt: skip
            elif kind == "attribute":
                values[f"tx.attributes.{key}"] = _shown(tx.attributes.get(key))
            elif key != "attributes":  # the map itself: its keys read are listed one by one
                values[f"tx.{key}"] = _shown(getattr(tx, key))
        out.append(RuleReason(name, values))
    return out


def _shown(value: Any) -> Any:
    """A value a rule read, as its reason code shows it: masked, and text cut at
    :data:`REASON_TEXT_CHARS` (an attribute can be as long as the message; the alert already
    carries it whole)."""
    value = _masked(value)
    if isinstance(value, str) and len(value) > REASON_TEXT_CHARS:
        return value[:REASON_TEXT_CHARS] + "..."
    return value


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_pans(value)
    if type(value) is int and 10**12 <= abs(value) < 10**19:  # a card number sent as a number
        masked = mask_pans(str(abs(value)))
        return value if masked.isdigit() else masked
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value
