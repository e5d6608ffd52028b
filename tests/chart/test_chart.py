"""The Helm chart with a real helm (v3.17.3), its manifests against Kubernetes schemas, its
alerts with promtool, and its dashboard against the metrics the code really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fraud_console.metrics import ConsoleMetrics
from fraud_operator.metrics import OperatorMetrics
from fraud_scorer.metrics import ScorerMetrics
from fraud_sinks.metrics import SinkMetrics

from tests.rbac import grants
from tests.servers import prometheus_server

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/fraud-detector"
HELM = Path.home() / ".cache/fraud-detector/helm-3.17.3/helm"
VALUES = ["values.yaml", "values-kind.yaml", "values-eks.yaml", "values-gke.yaml"]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        raise RuntimeError("no helm: run `make helm` (scripts/get_helm.py)")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, check=check, timeout=120
    )


def render(values: str, *extra: str) -> list[dict[str, Any]]:
    out = helm(
        "template",
        "fraud-detector",
        str(CHART),
        "-n",
        "fraud-system",
        "-f",
        str(CHART / values),
        *extra,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("values", VALUES)
def test_lint_strict(values: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(CHART / values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_refuses_bad_values() -> None:
    for bad in (
        "operator.replicas=0",
        "operator.image.pullPolicy=Sometimes",
        "operator.prometheusUrl=prometheus:9090",
        "surprise=1",
    ):
        result = helm("lint", "--strict", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, bad


@pytest.mark.parametrize("values", VALUES)
@pytest.mark.parametrize("version", ["1.25.0", "1.37.0"])
def test_rendered_manifests_match_kubernetes_schemas(values: str, version: str) -> None:
    docs = render(values)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(("monitoring.coreos.com/",)):
            continue  # Prometheus Operator kinds: no upstream schema
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 6


def test_secure_and_least_privilege_defaults() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render("values.yaml")}
    dep = docs[("Deployment", "fraud-detector-operator")]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = pod["containers"][0]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    rules = docs[("ClusterRole", "fraud-detector-operator")]["rules"]
    verbs = {
        (g, r): set(rule["verbs"])
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert verbs[("", "secrets")] == {"get"}
    assert "delete" not in verbs[("frauddetection.io", "frauddetectors")]
    assert ("", "pods") not in verbs and ("*", "*") not in verbs
    crd = docs[("CustomResourceDefinition", "frauddetectors.frauddetection.io")]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    no_keep = {
        (d["kind"], d["metadata"]["name"]): d
        for d in render("values.yaml", "--set", "crds.keep=false")
    }
    assert (
        "annotations"
        not in no_keep[("CustomResourceDefinition", "frauddetectors.frauddetection.io")]["metadata"]
    )
    assert not [
        d
        for d in render("values.yaml", "--set", "crds.install=false")
        if d["kind"] == "CustomResourceDefinition"
    ]


def test_namespaced_mode_has_no_cluster_wide_right() -> None:
    """watchNamespaces: a Role and RoleBinding in each namespace, the same rights the
    ClusterRole gives in one namespace (the cluster-wide e2e run proves each one used), with
    namespaced peering instead of the CRD watch and ClusterKopfPeering; nothing cluster-wide."""
    cluster_wide = render("values.yaml")
    docs = render("values.yaml", "--set", "watchNamespaces={team-a,team-b}")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "fraud-detector-operator",
                           "namespace": "fraud-system"}]
        for b in bindings
    ) and len(bindings) == 2  # fmt: skip
    cluster_role = next(d for d in cluster_wide if d["kind"] == "ClusterRole")
    cluster_only = {
        ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")
    } | {("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch", "create")}
    peering = {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch", "create")}
    for role in roles:
        assert grants(role["rules"]) == grants(cluster_role["rules"]) - cluster_only | peering
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--allowed-image=ghcr.io/fraud-detector/*" in args


def test_chart_crds_are_the_generated_ones() -> None:
    for name in ("frauddetector.yaml", "kopf-peering.yaml", "kopf-peering-namespaced.yaml"):
        assert (CHART / "files/crds" / name).read_text() == (ROOT / "crds" / name).read_text(), (
            f"copy crds/{name} into charts/fraud-detector/files/crds/"
        )


def test_the_conventions_sres_expect_of_a_chart() -> None:
    """Names, private registries, digests, extra arguments and environment, security contexts
    and a disruption budget, as cert-manager's or KEDA's charts take them."""
    digest = "sha256:" + "ab" * 32
    docs = render(
        "values.yaml",
        "--set", "fullnameOverride=fd",
        "--set", "imagePullSecrets[0].name=regcred",
        "--set", f"operator.image.digest={digest}",
        "--set", "operator.extraArgs[0]=--verbose",
        "--set", "operator.extraEnv[0].name=HTTPS_PROXY",
        "--set", "operator.extraEnv[0].value=http://proxy:3128",
    )  # fmt: skip
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["metadata"]["name"] == "fd-operator"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert container["image"] == f"ghcr.io/fraud-detector/operator@{digest}"
    assert container["args"][-1] == "--verbose"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert pod["securityContext"]["runAsNonRoot"] is True  # the defaults: restricted
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    budget = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    assert budget["apiVersion"] == "policy/v1"
    older = render("values.yaml", "--kube-version", "1.20.2")  # no policy/v1 before 1.21
    assert next(d for d in older if d["kind"] == "PodDisruptionBudget")["apiVersion"] == (
        "policy/v1beta1"
    )
    single = render("values.yaml", "--set", "operator.replicas=1")
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    named = render("values.yaml", "--set", "nameOverride=scoring")
    assert next(d for d in named if d["kind"] == "Deployment")["metadata"]["name"] == (
        "fraud-detector-scoring-operator"
    )
    bad = helm("template", "x", str(CHART), "--set", "operator.image.digest=latest", check=False)
    assert bad.returncode != 0
    # A registry mirror for every FraudDetector's scorers and console: one value each.
    mirrored = render(
        "values.yaml",
        "--set", "scorer.image.repository=mirror.example/fraud/scorer",
        "--set", f"console.image.digest={digest}",
    )  # fmt: skip
    args = next(d for d in mirrored if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "--scorer-image=mirror.example/fraud/scorer:0.1.0" in args
    assert f"--console-image=ghcr.io/fraud-detector/console@{digest}" in args


def test_the_readme_is_generated_from_documented_values() -> None:
    """Every value carries a ``# --`` comment (its own or a parent's), and the chart's README
    is the table generated from them."""
    from fraud_devtools.chart_readme import documented, render

    text = (CHART / "values.yaml").read_text()
    docs = {key for key, _ in documented(text)}

    def leaves(node: dict[str, Any], prefix: str = "") -> list[str]:
        out: list[str] = []
        for key, value in node.items():
            path = prefix + key
            out += leaves(value, path + ".") if isinstance(value, dict) and value else [path]
        return out

    bare = [
        leaf
        for leaf in leaves(yaml.safe_load(text))
        if not any(leaf == d or leaf.startswith(d + ".") for d in docs)
    ]
    assert not bare, f"values without a '# --' comment: {bare}"
    assert (CHART / "README.md").read_text() == render(), (
        "run: python -m fraud_devtools.chart_readme > charts/fraud-detector/README.md"
    )


def test_the_notes_show_an_example_the_chart_ships() -> None:
    """NOTES.txt prints the minimal FraudDetector from the chart's own files (a path into the
    repository would not exist for someone installing the packaged chart)."""
    notes = (CHART / "templates/NOTES.txt").read_text()
    shipped = re.findall(r'\.Files\.Get "([^"]+)"', notes)
    assert shipped == ["files/examples/minimal.yaml"]
    assert (CHART / shipped[0]).read_text() == (ROOT / "examples/minimal.yaml").read_text(), (
        "copy examples/minimal.yaml into charts/fraud-detector/files/examples/"
    )
    assert "kubectl apply -f examples/" not in notes


def test_monitoring_objects_render_when_enabled() -> None:
    docs = render("values-kind.yaml")
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(names) == 14 and {"FraudSinkCircuitOpen", "FraudConsoleLabelsDelayed"} <= set(names)
    # The operator's metrics name each FraudDetector's namespace: it must win over the
    # target's (the operator's own), or alerts point at the wrong namespace.
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert all(e["honorLabels"] is True for e in monitor["spec"]["endpoints"])
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["fraud-detector.json"])["uid"] == "fraud-detector"


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    """``runbook_url`` on every alert, each pointing at its own section of docs/runbooks.md
    (GitHub's anchor: the heading in lower case)."""
    alerts = yaml.safe_load((CHART / "files/alerts.yaml").read_text())
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    headings = re.findall(r"^## (\w+)$", (ROOT / "docs/runbooks.md").read_text(), re.MULTILINE)
    anchors = {h.lower() for h in headings}
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        base, anchor = url.split("#")
        assert base.endswith("/docs/runbooks.md") and anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"docs/runbooks.md has no section for {rule['alert']}"
    assert sorted(headings) == sorted(r["alert"] for r in rules)  # and none left over


def test_alerts_are_tuned_from_values_and_stay_valid_rules(tmp_path: Path) -> None:
    """By default the PrometheusRule holds files/alerts.yaml as is (what promtool tests).
    Values disable an alert, change a severity or a duration, add labels to every alert and
    move the runbooks; promtool accepts what is rendered."""

    def rule_spec(*sets: str) -> dict[str, Any]:
        extra = [a for s in sets for a in ("--set", s)]
        docs = render("values-kind.yaml", *extra)
        spec: dict[str, Any] = next(d for d in docs if d["kind"] == "PrometheusRule")["spec"]
        return spec

    assert rule_spec() == yaml.safe_load((CHART / "files/alerts.yaml").read_text())
    p = "monitoring.prometheusRule."
    tuned = rule_spec(
        p + "alerts.FraudSinkLagGrowing.disabled=true",
        p + "alerts.FraudLatencyP99High.severity=critical",
        p + "alerts.FraudLatencyP99High.for=5m",
        p + "additionalRuleLabels.team=payments",
        p + "runbookBaseUrl=https://wiki.example/fraud/runbooks",
        p + "alerts.FraudConsumerLagGrowing.threshold=40000",
        p + "alerts.FraudLatencyP99High.threshold=0.1",  # --set passes it as text
    )
    rules = {r["alert"]: r for g in tuned["groups"] for r in g["rules"]}
    assert "FraudSinkLagGrowing" not in rules and len(rules) == 13
    latency = rules["FraudLatencyP99High"]
    assert (latency["labels"]["severity"], latency["for"]) == ("critical", "5m")
    assert all(r["labels"]["team"] == "payments" for r in rules.values())
    assert rules["FraudScoringErrors"]["labels"]["severity"] == "critical"  # untouched
    assert latency["annotations"]["runbook_url"] == (
        "https://wiki.example/fraud/runbooks#fraudlatencyp99high"
    )
    rendered = tmp_path / "rules.yaml"
    rendered.write_text(yaml.safe_dump(tuned))
    promtool = shutil.which("promtool")
    assert promtool
    check = subprocess.run([promtool, "check", "rules", str(rendered)], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    bad = helm("template", "x", str(CHART), "--set", p + "alerts.FraudScoringErrors.severity=page",
               check=False)  # fmt: skip
    assert bad.returncode != 0 and "severity" in bad.stderr
    # Thresholds: the expression and the threshold annotation move together, and the tuned
    # rule really is quieter (promtool on what was rendered: 30,000 behind and growing fires
    # at the default 10,000, not at 40,000).
    lag = rules["FraudConsumerLagGrowing"]
    assert "(fraud_consumer_lag) > 40000" in lag["expr"]
    assert lag["annotations"]["threshold"] == "40000"
    assert ") > 0.1\n" in latency["expr"] and latency["annotations"]["threshold"] == "0.1"
    quiet = tmp_path / "quiet_test.yaml"
    quiet.write_text(yaml.safe_dump({
        "rule_files": [rendered.name],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{
                "series": 'fraud_consumer_lag{namespace="shop",detector="retail",track="stable"}',
                "values": "5000+1000x30",
            }],
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": "FraudConsumerLagGrowing", "exp_alerts": []}
            ],
        }],
    }))  # fmt: skip
    test = subprocess.run([promtool, "test", "rules", quiet.name], cwd=tmp_path,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr
    for value, problem in [("1", "has no threshold"), ("lots", "Does not match pattern")]:
        refused = helm("template", "x", str(CHART), "--set", p + "enabled=true", "--set",
                       p + f"alerts.FraudScoringErrors.threshold={value}", check=False)  # fmt: skip
        assert refused.returncode != 0 and problem in refused.stderr, refused.stderr


def test_alert_rules_with_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (make test installs it)"
    check = subprocess.run(
        [promtool, "check", "rules", str(CHART / "files/alerts.yaml")],
        capture_output=True,
        check=False,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"],
        cwd=Path(__file__).parent,
        capture_output=True,
        check=False,
        text=True,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def _exported_names() -> set[str]:
    names: set[str] = set()
    registries = (
        ScorerMetrics("d", "stable").registry,
        OperatorMetrics().registry,
        SinkMetrics("d", "webhook").registry,
        ConsoleMetrics().registry,
    )
    for registry in registries:
        for family in registry.collect():
            # What the exposition shows, also for labelled families with no child yet.
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            names.add(family.name)
            names.update(family.name + s for s in suffixes.get(family.type, ()))
            names.update(sample.name for sample in family.samples)
    return names


def _dashboard_exprs() -> list[str]:
    """Every PromQL query of the dashboard: panels, variables and annotations."""
    dash = json.loads((CHART / "files/dashboards/fraud-detector.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", []) if "expr" in t]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    exprs += [a["expr"] for a in dash["annotations"]["list"]]
    return exprs


def test_the_dashboard_is_the_generated_one() -> None:
    """Generated by fraud_devtools.dashboard (every panel described, filtered the same way)."""
    from fraud_devtools.dashboard import render

    committed = (CHART / "files/dashboards/fraud-detector.json").read_text()
    assert committed == render(), (
        "run: python -m fraud_devtools.dashboard > "
        "charts/fraud-detector/files/dashboards/fraud-detector.json"
    )
    dash = json.loads(committed)
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "cases", "namespace", "detector", "track", "model_version"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert all(p["description"] for p in panels)
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows[:3] == ["Decisions", "Rollouts", "Health"]
    assert {a["name"] for a in dash["annotations"]["list"]} == {"Promotions", "Rollbacks"}
    # Counting panels leave the shadow track out; scorer panels all filter by track and model.
    for p in panels:
        for t in p["targets"]:
            expr = t.get("expr", "")
            if "fraud_transactions_total" in expr and not p["title"].startswith("Canary"):
                assert 'track!="shadow"' in expr, p["title"]
            if re.search(r"fraud_(transactions|rule_hits|score|event_to_decision)", expr):
                assert "$model_version" in expr and "$track" in expr, p["title"]
    # The case-store panels run docs/sinks.md's SQL (tests/sinks runs it on the schema).
    sql = [t["rawSql"] for p in panels for t in p["targets"] if "rawSql" in t]
    assert len(sql) == 4 and all(q.lstrip().startswith("SELECT") for q in sql)


def test_dashboard_and_alerts_use_metrics_that_exist() -> None:
    exported = _exported_names()
    alerts = yaml.safe_load((CHART / "files/alerts.yaml").read_text())
    exprs = _dashboard_exprs() + [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\bfraud_[a-z0-9_]+", e)}
    assert used, "no metrics found"
    missing = sorted(used - exported)
    assert not missing, f"not exported by the scorer, sinks, console or operator: {missing}"
    dash = json.loads((CHART / "files/dashboards/fraud-detector.json").read_text())
    titles = {p["title"] for p in dash["panels"]}
    for wanted in (
        "Throughput by action",
        "Event-to-decision latency",
        "Alert rate by reason",
        "Score distribution",
        "Consumer lag",
        "Canary vs stable: alert share",
        "Rule hits",
        "Sinks: messages by outcome",
        "Sinks: retries and failures",
    ):
        assert wanted in titles


def test_dashboard_queries_parse_in_a_real_prometheus() -> None:
    with prometheus_server([]) as url:
        for expr in _dashboard_exprs():
            concrete = expr.replace("$__rate_interval", "1m")
            for variable in ("$namespace", "$detector", "$track", "$model_version"):
                concrete = concrete.replace(variable, ".*")
            if concrete.startswith("label_values("):
                continue  # a Grafana function, not PromQL
            query = urllib.parse.urlencode({"query": concrete})
            with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as r:
                assert json.loads(r.read())["status"] == "success", concrete
