"""The Grafana dashboard the chart ships, generated:
``python -m fraud_devtools.dashboard > charts/fraud-detector/files/dashboards/fraud-detector.json``.

One place says what each panel shows and how it filters, instead of a JSON file edited by
hand; ``tests/chart/test_chart.py`` fails if the committed file differs from this output.

Conventions every panel follows:

- ``$namespace``, ``$detector``, ``$track`` and ``$model_version`` filter every scorer panel.
  The model version is joined from ``fraud_model_info`` per pod, because the scorers' other
  metrics are labelled by track, not by model.
- Panels that count transactions (throughput, alert share, rule hits) leave the shadow track
  out: it decides every transaction a second time without acting on any. The canary panels
  compare every track, shadow included.
- The case-store panels read PostgreSQL through the optional ``$cases`` datasource, with the
  SQL that ``docs/sinks.md`` documents (and ``tests/sinks`` runs on the real schema).
- Promotions and rollbacks are annotations on every time series.
"""

from __future__ import annotations

import json
import re
import sys
from itertools import count
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROM = {"type": "prometheus", "uid": "${datasource}"}
CASES = {"type": "grafana-postgresql-datasource", "uid": "${cases}"}
SCORER = 'namespace=~"$namespace",detector=~"$detector",track=~"$track"'
ONCE = SCORER + ',track!="shadow"'  # each transaction once: stable and canary
RATE = "[$__rate_interval]"
# 1 for the pods running the chosen model versions (a filter, multiplied in per pod).
MODEL = (
    " * on (namespace, pod) group_left() group by (namespace, pod) "
    '(fraud_model_info{model_version=~"$model_version"})'
)


def rate(metric: str, selector: str = SCORER, extra: str = "") -> str:
    """Per-pod rate of ``metric``, kept only for the pods running ``$model_version``."""
    labels = selector + (f",{extra}" if extra else "")
    return f"(rate({metric}{{{labels}}}{RATE}){MODEL})"


def sinks(extra: str = "") -> str:
    return 'namespace=~"$namespace",detector=~"$detector"' + (f",{extra}" if extra else "")


def target(expr: str, legend: str, **more: Any) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, **more}


def panel(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str | None = None,
    kind: str = "timeseries",
    datasource: dict[str, str] = PROM,
    **more: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": targets,
        **more,
    }
    if unit is not None:
        out["fieldConfig"] = {"defaults": {"unit": unit}, "overrides": []}
    return out


def documented_sql() -> list[str]:
    """The case-store queries of docs/sinks.md, in order."""
    text = (ROOT / "docs" / "sinks.md").read_text()
    section = text[text.index("## Grafana: the case store") :]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


def rows() -> list[tuple[str, list[dict[str, Any]]]]:
    sql = documented_sql()
    alerting = 'action=~"review|block"'
    return [
        ("Decisions", [
            panel("Throughput by action",
                  "Decisions per second by action, stable and canary: each transaction once (a "
                  "shadow track decides every transaction again without acting).",
                  [target(f"sum by (action) {rate('fraud_transactions_total', ONCE)}",
                          "{{action}}")], "ops"),
            panel("Event-to-decision latency",
                  "From the record's Kafka timestamp to its decision being produced, every "
                  "track. The alert FraudLatencyP99High fires above 250 ms at p99.",
                  [target(f"histogram_quantile({q}, sum by (le) "
                          f"{rate('fraud_event_to_decision_seconds_bucket')})", f"p{pct}")
                   for q, pct in ((0.5, 50), (0.9, 90), (0.99, 99))], "s"),
            panel("Alert rate by reason",
                  "Rule matches per second by rule (stable and canary), and the share of "
                  "transactions sent to review or blocked.",
                  [target(f"sum by (rule) {rate('fraud_rule_hits_total', ONCE)}", "{{rule}}"),
                   target(f"sum {rate('fraud_transactions_total', ONCE, alerting)} / "
                          f"sum {rate('fraud_transactions_total', ONCE)}", "alert share")],
                  "short"),
            panel("Score distribution",
                  "The model's fraud probabilities, per bucket, for the chosen tracks and "
                  "model versions: a shift here is a shift in traffic or in the model.",
                  [target("sum by (le) (increase(fraud_score_bucket{" + SCORER + "}" + RATE
                          + ")" + MODEL + ")", "{{le}}", format="heatmap")], kind="heatmap"),
        ]),
        ("Rollouts", [
            panel("Canary vs stable: alert share",
                  "Share of each track's decisions sent to review or blocked, shadow included: "
                  "what the rollout analysis judges (maxAlertRateRatio).",
                  [target(f"sum by (track) {rate('fraud_transactions_total', SCORER, alerting)}"
                          f" / sum by (track) {rate('fraud_transactions_total')}",
                          "{{track}}")], "percentunit"),
            panel("Canary vs stable: p99 latency",
                  "Each track's p99 event-to-decision latency (maxLatencyP99Ratio).",
                  [target("histogram_quantile(0.99, sum by (track, le) "
                          f"{rate('fraud_event_to_decision_seconds_bucket')})", "{{track}}")],
                  "s"),
            panel("Model and rules in use",
                  "Which model version and rule-set version each track runs (value 1).",
                  [target('max by (track, model_version) (fraud_model_info{' + SCORER
                          + ',model_version=~"$model_version"})',
                          "{{track}} model {{model_version}}"),
                   target("max by (track, rules_version) (fraud_rules_info{" + SCORER + "})",
                          "{{track}} rules {{rules_version}}")]),
            panel("Operator: reconciles and rollouts",
                  "The operator's passes by result, rollout transitions per FraudDetector, "
                  "and each FraudDetector's Ready condition (1 = Ready).",
                  [target("sum by (result) (rate(fraud_operator_reconciles_total" + RATE + "))",
                          "reconcile {{result}}"),
                   target("sum by (namespace, name, reason) (increase("
                          'fraud_operator_rollout_transitions_total{namespace=~"$namespace"}'
                          + RATE + "))", "rollout {{namespace}}/{{name}} {{reason}}"),
                   target("min by (namespace, name) "
                          '(fraud_operator_detector_ready{namespace=~"$namespace"})',
                          "ready {{namespace}}/{{name}}")]),
        ]),
        ("Health", [
            panel("Consumer lag",
                  "Messages behind each partition's high watermark, per track. "
                  "FraudConsumerLagGrowing fires above 10,000 and growing.",
                  [target("sum by (track) (fraud_consumer_lag{" + SCORER + "})", "{{track}}")],
                  "short"),
            panel("Rule hits",
                  "Rule matches in each interval, by rule, stable and canary.",
                  [target("sum by (rule) (increase(fraud_rule_hits_total{" + ONCE + "}" + RATE
                          + ")" + MODEL + ")", "{{rule}}")], "short"),
            panel("Dead letters by reason",
                  "Input the stable track could not decide, by reason (the dead-letter topic "
                  "has each message with dlq.reason).",
                  [target("sum by (reason) (rate(fraud_dead_letters_total{" + SCORER + "}"
                          + RATE + "))", "{{reason}}")], "ops"),
            panel("Scoring and delivery errors",
                  "Batches the model failed to score (decided by the fallback) and produced "
                  "messages the brokers refused, per track.",
                  [target("sum by (track) (rate(fraud_scoring_errors_total{" + SCORER + "}"
                          + RATE + "))", "scoring {{track}}"),
                   target("sum by (track) (rate(fraud_delivery_errors_total{" + SCORER + "}"
                          + RATE + "))", "delivery {{track}}")], "ops"),
        ]),
        ("Sinks and console", [
            panel("Sinks: messages by outcome",
                  "What the webhook and case-store sinks did with each message.",
                  [target("sum by (sink, outcome) (rate(fraud_sink_messages_total{" + sinks()
                          + "}" + RATE + "))", "{{sink}} {{outcome}}")], "ops"),
            panel("Sinks: retries and failures",
                  "Deliveries retried and given up (then dead-lettered).",
                  [target("sum by (sink) (rate(fraud_sink_retries_total{" + sinks() + "}" + RATE
                          + "))", "retries {{sink}}"),
                   target("sum by (sink) (rate(fraud_sink_failures_total{" + sinks() + "}"
                          + RATE + "))", "failures {{sink}}")], "ops"),
            panel("Sinks: delivery and end-to-end latency (p99)",
                  "Time to deliver one message, and from the transaction's event to its "
                  "delivery.",
                  [target("histogram_quantile(0.99, sum by (sink, le) (rate("
                          "fraud_sink_delivery_seconds_bucket{" + sinks() + "}" + RATE + ")))",
                          "delivery {{sink}}"),
                   target("histogram_quantile(0.99, sum by (sink, le) (rate("
                          "fraud_sink_end_to_end_seconds_bucket{" + sinks() + "}" + RATE
                          + ")))", "end to end {{sink}}")], "s"),
            panel("Sinks: lag, circuit breaker, readiness",
                  "Messages behind, the webhook's circuit (1 = open) and readiness (1 = ready).",
                  [target("sum by (sink) (fraud_sink_consumer_lag{" + sinks() + "})",
                          "lag {{sink}}"),
                   target("max by (sink) (fraud_sink_circuit_open{" + sinks() + "})",
                          "circuit open {{sink}}"),
                   target("min by (sink) (fraud_sink_ready{" + sinks() + "})",
                          "ready {{sink}}")]),
            panel("Console: p95 request time by route",
                  "Server time of the analyst console's pages (docs/console.md).",
                  [target("histogram_quantile(0.95, sum by (route, le) (rate("
                          'fraud_console_request_seconds_bucket{namespace=~"$namespace"}' + RATE
                          + ")))", "{{route}}")], "s"),
            panel("Console: labels published",
                  "Analysts' labels acknowledged by the labels topic, and failed outbox "
                  "passes (the labels wait and are retried).",
                  [target('sum (rate(fraud_console_labels_published_total{namespace=~"$namespace"}'
                          + RATE + "))", "published"),
                   target("sum (rate(fraud_console_label_publish_failures_total"
                          '{namespace=~"$namespace"}' + RATE + "))", "failed passes")], "ops"),
        ]),
        ("Case store (PostgreSQL datasource, optional)", [
            panel("Top fraud by amount",
                  "Confirmed fraud, and blocks nobody has looked at yet (docs/sinks.md).",
                  [{"rawSql": sql[0].strip(), "format": "table", "rawQuery": True}],
                  kind="table", datasource=CASES),
            panel("Fraud vs legit over time",
                  "Analysts' verdicts per hour, open alerts and allowed transactions.",
                  [{"rawSql": sql[1].strip(), "format": "time_series", "rawQuery": True}],
                  datasource=CASES),
            panel("Open cases",
                  "Alerts waiting for an analyst, newest first (the console's queue).",
                  [{"rawSql": sql[2].strip(), "format": "table", "rawQuery": True}],
                  kind="table", datasource=CASES),
            panel("Precision by reason",
                  "Which rules earn their alerts, from analysts' verdicts.",
                  [{"rawSql": sql[3].strip(), "format": "table", "rawQuery": True}],
                  kind="barchart", datasource=CASES),
        ]),
    ]  # fmt: skip


def variables() -> list[dict[str, Any]]:
    def query(name: str, expr: str, label: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": PROM,
            "query": expr,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "current": {"text": "All", "value": "$__all"},
        }

    return [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}},
        {"name": "cases", "label": "Case store", "type": "datasource",
         "query": "grafana-postgresql-datasource", "current": {}},
        query("namespace", "label_values(fraud_transactions_total, namespace)", "Namespace"),
        query("detector", 'label_values(fraud_transactions_total{namespace=~"$namespace"}, '
              "detector)", "Detector"),
        query("track", 'label_values(fraud_transactions_total{namespace=~"$namespace",'
              'detector=~"$detector"}, track)', "Track"),
        query("model_version", 'label_values(fraud_model_info{namespace=~"$namespace",'
              'detector=~"$detector"}, model_version)', "Model version"),
    ]  # fmt: skip


def rollout_annotations() -> list[dict[str, Any]]:
    """Promotions and rollbacks, on every time series."""
    return [
        {
            "name": name,
            "datasource": PROM,
            "enable": True,
            "iconColor": color,
            "expr": "sum by (namespace, name) (changes(fraud_operator_rollout_transitions_total"
            f'{{namespace=~"$namespace",reason="{reason}"}}[2m])) > 0',
            "step": "1m",
            "titleFormat": f"{reason} {{{{namespace}}}}/{{{{name}}}}",
            "textFormat": "kubectl describe fd {{name}} -n {{namespace}}",
        }
        for name, reason, color in (
            ("Promotions", "Promoted", "green"),
            ("Rollbacks", "RolledBack", "red"),
        )
    ]


def dashboard() -> dict[str, Any]:
    ids = count(1)
    panels: list[dict[str, Any]] = []
    y = 0
    for title, members in rows():
        panels.append({"id": next(ids), "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})  # fmt: skip
        y += 1
        for i, member in enumerate(members):
            for ref, t in zip("ABCDEFGH", member["targets"], strict=False):
                t.setdefault("refId", ref)
            at = {"x": 12 * (i % 2), "y": y, "w": 12, "h": 8}
            panels.append({"id": next(ids), **member, "gridPos": at})
            y += 8 if i % 2 else 0
        y += 8 if len(members) % 2 else 0
    return {
        "title": "Fraud detector",
        "uid": "fraud-detector",
        "description": "Scorers, rollouts, sinks, the analyst console and the case store of "
        "every FraudDetector (generated by fraud_devtools.dashboard)",
        "schemaVersion": 39,
        "version": 2,
        "editable": True,
        "tags": ["fraud", "kafka"],
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "annotations": {"list": rollout_annotations()},
        "templating": {"list": variables()},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
