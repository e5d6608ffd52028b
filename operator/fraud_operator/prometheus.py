"""Measure a track from Prometheus (HTTP API, instant queries) for canary analysis.

Every query is scoped by the scorer's ``detector`` and ``track`` labels (plus any extra
matchers, e.g. ``namespace``) and looks back one analysis window. A query that returns
nothing gives ``None`` - "no data", which the analysis treats as *wait*.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from fraud_runtime.redact import public_url

from fraud_operator.analysis import TrackSample

log = logging.getLogger("fraud_operator.prometheus")


class PrometheusError(Exception):
    """Prometheus could not be asked (unreachable, bad query): the analysis waits."""


# An answer to one instant query is a few kB; anything this large is not Prometheus, and is
# neither read into memory nor copied into a status.
MAX_ANSWER_BYTES = 4 << 20
_SHOWN = 300  # characters of an error that reach logs and status


@dataclass(frozen=True)
class Prometheus:
    url: str
    timeout_s: float = 5.0

    def query(self, expr: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr})
        request = f"{self.url.rstrip('/')}/api/v1/query?{params}"
        where = public_url(self.url)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - an http(s) URL, checked in the spec
                raw = response.read(MAX_ANSWER_BYTES + 1)
            if len(raw) > MAX_ANSWER_BYTES:
                raise PrometheusError(f"{where}: answer larger than {MAX_ANSWER_BYTES} bytes")
            body = json.loads(raw)
            if body.get("status") != "success":
                raise PrometheusError(f"{where}: {str(body.get('error', 'query failed'))[:_SHOWN]}")
            result: list[dict[str, Any]] = body["data"]["result"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PrometheusError(f"{where}: {str(exc).replace(self.url, where)[:_SHOWN]}") from exc
        return result

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        if not result:
            return None
        value = _number(result[0], self.url)
        return None if math.isnan(value) else value


def _number(sample: dict[str, Any], url: str) -> float:
    """A sample's value; anything else is an answer Prometheus would not give."""
    try:
        return float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise PrometheusError(f"{public_url(url)}: not a Prometheus sample") from exc


def _selector(detector: str, track: str, extra: dict[str, str]) -> str:
    labels = {"detector": detector, "track": track, **extra}
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def track_sample(
    prom: Prometheus,
    *,
    detector: str,
    track: str,
    window: str,
    extra: dict[str, str] | None = None,
) -> TrackSample:
    """The increases over ``window`` (e.g. ``1m``) that :func:`~fraud_operator.analysis.analyse`
    compares."""
    sel = _selector(detector, track, extra or {})
    w = window
    transactions = prom.scalar(f"sum(increase(fraud_transactions_total{{{sel}}}[{w}]))")
    alerts = prom.scalar(
        f'sum(increase(fraud_transactions_total{{{sel},action=~"review|block"}}[{w}]))'
    )
    if transactions is not None and alerts is None:
        alerts = 0.0  # no review/block series yet: no alerts
    errors = prom.scalar(
        f"sum(increase(fraud_scoring_errors_total{{{sel}}}[{w}]))"
        f" + sum(increase(fraud_delivery_errors_total{{{sel}}}[{w}]))"
    )
    p99 = prom.scalar(
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(fraud_event_to_decision_seconds_bucket{{{sel}}}[{w}])))"
    )
    buckets = {
        _number({"value": [0, r.get("metric", {}).get("le")]}, prom.url): _number(r, prom.url)
        for r in prom.query(f"sum by (le) (increase(fraud_score_bucket{{{sel}}}[{w}]))")
    }
    lag = prom.scalar(f"sum(delta(fraud_consumer_lag{{{sel}}}[{w}]))")
    blocks = prom.scalar(f'sum(increase(fraud_transactions_total{{{sel},action="block"}}[{w}]))')
    if transactions is not None and blocks is None:
        blocks = 0.0  # no block series yet: nothing blocked
    hits = {
        r["metric"]["rule"]: _number(r, prom.url)
        for r in prom.query(f"sum by (rule) (increase(fraud_rule_hits_total{{{sel}}}[{w}]))")
        if "rule" in r.get("metric", {})
    }
    return TrackSample(
        transactions=transactions,
        alerts=alerts,
        errors=errors if errors is not None else (0.0 if transactions is not None else None),
        p99_latency_s=p99,
        score_buckets=buckets,
        lag_growth=lag,
        blocks=blocks,
        rule_hits=hits,
    )


def loaded_rules_versions(
    prom: Prometheus, *, detector: str, extra: dict[str, str] | None = None
) -> set[str]:
    """The rule-set versions the running scorers of ``detector`` report (``fraud_rules_info``)."""
    sel = ",".join(f'{k}="{v}"' for k, v in sorted({"detector": detector, **(extra or {})}.items()))
    result = prom.query(f"max by (rules_version) (fraud_rules_info{{{sel}}} == 1)")
    return {r["metric"]["rules_version"] for r in result if "rules_version" in r["metric"]}
