"""Export a fitted model to ONNX, prove it scores like the native model, write the manifest.

- LightGBM goes through onnxmltools, random forests through skl2onnx; both as one
  ``TreeEnsembleClassifier`` node with a ``probabilities`` output ([n, 2]).
- Isolation forests are built here as one ``TreeEnsembleRegressor`` plus three arithmetic nodes.
  skl2onnx's converter emits a sub-graph per tree (thousands of nodes for 200 trees), which
  onnxruntime runs node by node: our graph computes the same ``2 ** (-E[h(x)] / c(n))`` with
  each leaf's path length (depth + the expected depth of the unbuilt subtree) precomputed.
- The ONNX scores must equal the native scores within :data:`PARITY_TOLERANCE` on held-out
  rows; otherwise nothing is written. The artifact is then loaded back through the scorer's
  own verifying loader when it is one the scorer can serve (its feature set).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from fraud_scorer import feature_sets
from fraud_scorer.feature_defs import parse_feature_set
from fraud_scorer.model import EXPLAINER_FILE, MANIFEST_FILE, MODEL_FILE, load_model, sha256_file
from fraud_scorer.tree_shap import Explainer
from onnx import TensorProto, helper
from sklearn.ensemble._iforest import _average_path_length

from fraud_training.models import Fitted
from fraud_training.trees import forest_trees, lightgbm_trees

PARITY_TOLERANCE: Final = 1e-5
OUTPUT: Final = "probabilities"
_OPSET: Final = {"": 15, "ai.onnx.ml": 3}
_PARITY_ROWS: Final = 20_000


def explainer_of(fitted: Fitted, rows: npt.NDArray[np.float32]) -> Explainer | None:
    """The model's trees for TreeSHAP, checked: on ``rows`` the contributions must add up to
    the native model's score (a tree read wrong would not)."""
    width = len(fitted.feature_names)
    if fitted.kind == "lightgbm":
        explainer = Explainer(tuple(lightgbm_trees(fitted.estimator.booster_)), "logit", width)
    elif fitted.kind == "random-forest":
        explainer = Explainer(tuple(forest_trees(fitted.estimator)), "probability", width)
    else:
        return None
    # Trees too large to tabulate are explained row by row (slow): check fewer rows.
    sample = rows[: 200 if explainer.tabulated else 10]
    total = explainer.contributions(sample.astype(np.float64)).sum(axis=1)
    if explainer.link == "logit":
        total = 1.0 / (1.0 + np.exp(-total))
    worst = float(np.abs(total - fitted.score(sample)).max()) if len(sample) else 0.0
    if worst > PARITY_TOLERANCE:
        raise ExportError(
            f"the explainer's contributions differ from {fitted.kind}'s scores by up to "
            f"{worst:.2e}; not exporting"
        )
    return explainer


class ExportError(RuntimeError):
    """The export does not reproduce the native model; nothing was written."""


def to_onnx(fitted: Fitted) -> onnx.ModelProto:
    width = len(fitted.feature_names)
    model: onnx.ModelProto
    if fitted.kind == "lightgbm":
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        model = convert_lightgbm(
            fitted.estimator,
            initial_types=[("features", FloatTensorType([None, width]))],
            zipmap=False,
            target_opset=_OPSET[""],
        )
    elif fitted.kind == "random-forest":
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType as SkFloat

        model = convert_sklearn(
            fitted.estimator,
            initial_types=[("features", SkFloat([None, width]))],
            options={"zipmap": False},
            target_opset=_OPSET,
        )
    else:
        model = isolation_forest_graph(fitted.estimator, width)
    outputs = [o.name for o in model.graph.output]
    if OUTPUT not in outputs:
        raise ExportError(f"the converted graph has no {OUTPUT!r} output (it has {outputs})")
    return model


def isolation_forest_graph(forest: Any, width: int) -> onnx.ModelProto:
    """One TreeEnsembleRegressor summing each tree's leaf path lengths, then the anomaly score
    ``s = 2 ** (-sum / (n_trees * c(max_samples)))`` and ``probabilities = [1 - s, s]``."""
    attrs: dict[str, list[Any]] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    for t, (tree, features) in enumerate(
        zip(forest.estimators_, forest.estimators_features_, strict=True)
    ):
        nodes = tree.tree_
        left, right = nodes.children_left, nodes.children_right
        depth = np.zeros(nodes.node_count, dtype=np.int64)
        for i in range(nodes.node_count):  # children always come after their parent
            if left[i] >= 0:
                depth[left[i]] = depth[right[i]] = depth[i] + 1
        path = depth + 1.0 + _average_path_length(nodes.n_node_samples) - 1.0
        for i in range(nodes.node_count):
            leaf = left[i] < 0
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(i)
            attrs["nodes_featureids"].append(0 if leaf else int(features[nodes.feature[i]]))
            attrs["nodes_values"].append(0.0 if leaf else float(nodes.threshold[i]))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(0 if leaf else int(left[i]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(right[i]))
            if leaf:
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(i)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(path[i]))
    denominator = len(forest.estimators_) * float(_average_path_length([forest.max_samples_])[0])
    nodes_ = [
        helper.make_node(
            "TreeEnsembleRegressor",
            ["features"],
            ["path_sum"],
            domain="ai.onnx.ml",
            n_targets=1,
            aggregate_function="SUM",
            **attrs,  # type: ignore[arg-type]
        ),
        # 2 ** (-sum / d) = exp(sum * (-ln 2 / d))
        helper.make_node("Mul", ["path_sum", "scale"], ["exponent"]),
        helper.make_node("Exp", ["exponent"], ["anomaly"]),
        helper.make_node("Sub", ["one", "anomaly"], ["normal"]),
        helper.make_node("Concat", ["normal", "anomaly"], [OUTPUT], axis=1),
    ]
    graph = helper.make_graph(
        nodes_,
        "isolation_forest",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 2])],
        initializer=[
            helper.make_tensor("scale", TensorProto.FLOAT, [], [-math.log(2.0) / denominator]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    opsets = [helper.make_opsetid(domain, v) for domain, v in _OPSET.items()]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="fraud_training")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def onnx_scores(model: onnx.ModelProto, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    (probs,) = session.run([OUTPUT], {session.get_inputs()[0].name: x})
    return np.asarray(probs, dtype=np.float64)[:, 1]


def parity(fitted: Fitted, model: onnx.ModelProto, x: npt.NDArray[np.float32]) -> float:
    """Largest absolute difference between native and ONNX scores on ``x``."""
    if len(x) == 0:
        return 0.0
    return float(np.max(np.abs(fitted.score(x) - onnx_scores(model, x))))


def export(
    fitted: Fitted,
    out_dir: Path,
    *,
    version: str,
    holdout: npt.NDArray[np.float32],
    threshold: float,
    metrics: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """Convert, check parity on ``holdout`` rows, write ``model.onnx`` and ``manifest.json``;
    returns the manifest."""
    model = to_onnx(fitted)
    rows = holdout[:_PARITY_ROWS]
    worst = parity(fitted, model, rows)
    if worst > PARITY_TOLERANCE:
        raise ExportError(
            f"ONNX scores differ from {fitted.kind} by up to {worst:.2e} on {len(rows)} held-out "
            f"rows (tolerance {PARITY_TOLERANCE:.0e}); not exporting"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    explainer = explainer_of(fitted, rows)
    onnx_path = out_dir / MODEL_FILE
    onnx_path.write_bytes(model.SerializeToString())
    explained: dict[str, Any] = {}
    if explainer is not None:
        (out_dir / EXPLAINER_FILE).write_bytes(explainer.to_json())
        explained = {"explainer_sha256": sha256_file(out_dir / EXPLAINER_FILE)}
    definitions = fitted.extra.get("feature_definitions")
    features = (
        feature_sets.declared(parse_feature_set(definitions))
        if definitions is not None
        else feature_sets.V1
    )
    types = features.cel_types
    manifest = {
        "version": version,
        "sha256": sha256_file(onnx_path),
        "feature_names": list(fitted.feature_names),
        "feature_types": [types.get(n, "double") for n in fitted.feature_names],
        "feature_set_version": fitted.feature_set,
        "threshold": threshold,
        "output_name": OUTPUT,
        "positive_class_index": 1,
        "model_kind": fitted.kind,
        "framework": fitted.framework,
        "params": fitted.params,
        "graph_nodes": len(model.graph.node),
        "created_at": datetime.now(UTC).isoformat(),
        "parity": {"rows": len(rows), "max_abs_diff": worst, "tolerance": PARITY_TOLERANCE},
        # The trees with their training covers, for the reason codes of the alerts the model
        # raises (exact TreeSHAP; absent for the isolation forest).
        **explained,
        "metrics": metrics,
        "data": data,
        # The declared set the model was trained on: what a scorer's features.definitions (a
        # FraudDetector's spec.features) must be for it to load (absent: the shipped v1).
        **({"feature_definitions": definitions} if definitions is not None else {}),
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    if fitted.feature_set == features.version:
        # the scorer's own verification: hash, feature set, warm-up
        load_model(out_dir, features=features)
    return manifest
