"""A model that fails on real traffic, end to end: a real scorer process decides every
transaction by the fallback, counts the failed batches, and a real Prometheus evaluating the
chart's own alert rules raises FraudScoringErrors from the scorer's real series."""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import msgspec
import pandas as pd
import pytest
from fraud_devtools.mock_cluster import MockCluster

from tests.integration.harness import (
    TOPICS,
    ScorerProcess,
    produce,
    read_topic,
    steady_traffic,
    stream,
    topic_size,
    wait_until,
)
from tests.servers import prometheus_server

pytestmark = pytest.mark.integration
ALERT_RULES = Path(__file__).resolve().parents[2] / "charts/fraud-detector/files/alerts.yaml"


def model_that_fails_on_most_batches(model_dir: Path, into: Path) -> Path:
    """The trained model's manifest over a graph that only takes batches of exactly 8 rows
    (a fixed Reshape): it passes the loader's 8-row warm-up, then onnxruntime fails on real
    batches, as a model exported with a wrong static shape would."""
    import onnx
    from fraud_scorer.features import FEATURE_NAMES
    from onnx import TensorProto, helper

    width = len(FEATURE_NAMES)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [8, width])
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["fixed"]),
        helper.make_node("ReduceMean", ["fixed"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Sigmoid", ["m"], ["p"]),
        helper.make_node("Concat", ["p", "p"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "eight-rows-only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [8, 2])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    shutil.copytree(model_dir, into)
    onnx.save(model, str(into / "model.onnx"))
    manifest = json.loads((into / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256((into / "model.onnx").read_bytes()).hexdigest()
    manifest["version"] = "eight-rows-only"
    (into / "manifest.json").write_text(json.dumps(manifest))
    return into


def alerts(prometheus: str, name: str) -> list[dict[str, object]]:
    query = urllib.parse.urlencode({"query": f'ALERTS{{alertname="{name}"}}'})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{query}", timeout=5) as r:
        result: list[dict[str, object]] = json.loads(r.read())["data"]["result"]
    return result


def test_a_failing_model_is_decided_by_the_fallback_counted_and_alerted(
    cluster: MockCluster, tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    bootstrap = cluster.bootstrap_servers
    broken = model_that_fails_on_most_batches(model_dir, tmp_path / "broken-model")
    scorer = ScorerProcess(tmp_path, bootstrap, broken).start()
    items = stream(small_stream.iloc[:600])
    with prometheus_server([f"127.0.0.1:{scorer.port}"], rule_files=[ALERT_RULES]) as prom:
        produce(bootstrap, TOPICS["input"], items)
        wait_until(lambda: topic_size(bootstrap, TOPICS["decisions"]) >= len(items), 60, "all")
        decided = [
            msgspec.json.decode(r.value or b"") for r in read_topic(bootstrap, TOPICS["decisions"])
        ]
        failed = [d for d in decided if "model_error" in d["reasons"]]
        assert len(decided) == len(items)
        assert len(failed) >= len(items) * 0.9  # batches of exactly 8 may still score
        assert all(d["score"] == 0.0 for d in failed)
        assert scorer.metric("fraud_scoring_errors_total") >= 1
        assert "the model failed on a batch" in scorer.log()
        # The chart's rule, on the scorer's own series while failures go on: pending at once
        # (it fires after its `for`).
        with steady_traffic(bootstrap, TOPICS["input"], items, per_tick=20):
            wait_until(lambda: bool(alerts(prom, "FraudScoringErrors")), 60, "the alert")
        (alert,) = alerts(prom, "FraudScoringErrors")
        assert alert["metric"]["detector"] == "it"  # type: ignore[index]
    assert scorer.proc is not None and scorer.proc.poll() is None
    assert scorer.stop() == 0
