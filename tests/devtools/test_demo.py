"""``make demo`` end to end, small: a model trained on the demo's feature set, real entity
stage and scorer processes on the mock cluster, paced traffic with malformed messages, and a
report in which nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest
import yaml
from fraud_devtools.demo import HISTORY_FILE, main
from fraud_rules.backtest import decide, history_of
from fraud_scorer import feature_sets
from fraud_scorer.config import ScorerSettings
from fraud_scorer.model import load_model
from fraud_scorer.rules import compile_rules
from fraud_training.data import validate

pytestmark = pytest.mark.integration


def test_the_demo_decides_or_dead_letters_every_message(tmp_path: Path) -> None:
    args = ["--transactions", "3000", "--rate", "3000", "--users", "600"]
    code = main(
        [
            *args,
            "--train-users",
            "800",
            "--malformed-share",
            "0.01",
            "--build-dir",
            str(tmp_path),
            "--keep-decisions",
            str(tmp_path / "decisions.jsonl"),
        ]
    )
    report = json.loads((tmp_path / "demo-report.json").read_text())
    assert code == 0, report
    assert report["transactions_produced"] == 3000
    assert report["decisions"] == 3000
    assert sum(report["dead_letters"].values()) == report["malformed_produced"] == 30
    assert report["lost"] == 0 and report["scorer_exit_code"] == 0
    stage = report["entity_stage"]
    assert stage["exit_code"] == 0
    assert stage["folded"] == 2 * 3000  # each transaction for its merchant and its device
    assert report["feature_set"].startswith("fs-")

    _backtest_reproduces_the_demo(tmp_path, report)


def _backtest_reproduces_the_demo(build: Path, report: dict[str, Any]) -> None:
    """The demo's rules backtested over the traffic it sent give its own per-rule counts, and
    row by row its own decisions wherever the entity stage had caught up when the scorer
    joined it (a backtest joins staged values as of each transaction; a live scorer as the
    stage has them, about 60 ms behind here): every other difference is that freshness. The
    rules that read no staged feature reproduce the demo's counts exactly."""
    backtest = subprocess.run(
        [sys.executable, "-m", "fraud_rules", "backtest", str(build / "demo-scorer.yaml"),
         "--data", str(build / HISTORY_FILE), "--model", str(build / "demo-model"),
         "--format", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert backtest.returncode == 0, backtest.stderr
    replayed = {r["name"]: r["figures"]["alerts"] for r in json.loads(backtest.stdout)["rules"]}

    settings = ScorerSettings.model_validate(
        yaml.safe_load((build / "demo-scorer.yaml").read_text())
    )
    f = settings.features
    features = feature_sets.from_settings(f.definitions, f.history_hours, f.max_events_per_user)
    assert features.staged is not None
    staged = [features.index[d.name] for d in features.staged.staged()]
    own = [i for i in range(len(features.names)) if i not in staged]
    history = history_of(validate(pd.read_parquet(build / HISTORY_FILE)), features)
    decided = decide(
        history,
        compile_rules(settings.rules, settings.decision, features),
        load_model(build / "demo-model", features=features),
    )
    served = {}
    for line in (build / "decisions.jsonl").read_bytes().splitlines():
        d = msgspec.json.decode(line)
        served[d["transaction_id"]] = d
    names = [r.name for r in settings.rules]
    reads_staged = {
        r.name for r in settings.rules if any(f"features.{features.names[i]}" in r.expression
                                              for i in staged)
    }  # fmt: skip
    counts: Counter[str] = Counter()
    stale = 0
    for i, tx in enumerate(history.transactions):
        d = served[tx.transaction_id]
        row = [d["features"][name] for name in features.names]
        replayed_row = history.rows[i]
        assert [row[k] for k in own] == [replayed_row[k] for k in own]  # user features: exact
        fired = [names[j] for j in decided.hits[i].nonzero()[0]]
        counts.update(fired)
        if [row[k] for k in staged] != [replayed_row[k] for k in staged]:
            stale += 1
            continue
        assert d["action"] == decided.actions[i], (tx.transaction_id, d, fired)
        assert d["reasons"] == fired + (["model"] if decided.model[i] else [])
    # Merchants' counts change with nearly every transaction, so most rows join a value a few
    # transactions old; enough rows are compared for the check to mean something.
    assert len(history) - stale >= 300, stale
    for rule in names:
        if rule not in reads_staged:
            assert replayed.get(rule, 0) == report["alerts_by_reason"].get(rule, 0), rule
        assert replayed.get(rule, 0) == counts[rule]

    # On the features the scorer had (its decisions carry them), every rule's count, staged
    # or not, and every action is the demo's own.
    on_served = subprocess.run(
        [sys.executable, "-m", "fraud_rules", "backtest", str(build / "demo-scorer.yaml"),
         "--data", str(build / HISTORY_FILE), "--model", str(build / "demo-model"),
         "--served", str(build / "decisions.jsonl"), "--format", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert on_served.returncode == 0, on_served.stderr
    result = json.loads(on_served.stdout)
    assert result["features_from"] == "served"
    alerts = {r["name"]: r["figures"]["alerts"] for r in result["rules"]}
    assert reads_staged and all(alerts[r] > 0 for r in reads_staged)
    for rule in names:
        assert alerts.get(rule, 0) == report["alerts_by_reason"].get(rule, 0), rule
    assert result["by_action"] == report["actions"]


def test_the_demo_serves_its_cases_in_the_console(tmp_path: Path) -> None:
    """``fraud-demo --console``: the decisions reach a PostgreSQL case store through the real
    case-store sink, a share of the alerts is labelled through the labels topic, and the real
    console serves them at the printed URL until Ctrl-C."""
    import os
    import re
    import signal
    import urllib.parse
    import urllib.request
    from http.cookiejar import CookieJar

    from fraud_devtools.local import free_port, wait_until

    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "fraud_devtools.demo", "--transactions", "2000", "--rate", "2000",
         "--users", "500", "--train-users", "800", "--build-dir", str(tmp_path), "--console",
         "--console-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        login = tmp_path / "demo-console-login.txt"
        wait_until(lambda: login.exists() and _answers(url), 240, "the demo's console")
        user, password = login.read_text().split()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        form = opener.open(url + "/login").read().decode()
        token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        body = urllib.parse.urlencode({"username": user, "password": password, "csrf": token})
        queue = opener.open(url + "/login", data=body.encode()).read().decode()
        assert queue.count("<tr data-case=") > 10  # the demo's open alerts
        perf = opener.open(url + "/performance").read().decode()
        assert perf.count("<tr data-reason=") >= 3  # precision from the labelled alerts
    finally:
        # Ctrl-C; this test's runner may itself have been started with SIGINT ignored (a
        # background job), which the demo must not inherit.
        demo.send_signal(signal.SIGINT)
        try:
            out, _ = demo.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)  # the demo and everything it started
            out, _ = demo.communicate()
            raise
    text = out.decode(errors="replace")
    assert demo.returncode == 0, text[-3000:]
    assert f"analyst console http://127.0.0.1:{port}/" in text and password in text
    report = json.loads((tmp_path / "demo-report.json").read_text())
    assert report["case_store"]["cases"] == report["decisions"] == 2000
    assert report["case_store"]["labelled_alerts"] > 50


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
