"""ONNX export: parity with the native model, a fast isolation-forest graph, and artifacts the
scorer loads (or refuses, when they were trained on features it does not compute)."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest
from fraud_scorer.features import FEATURE_NAMES, FEATURE_SET_VERSION
from fraud_scorer.model import ModelError, load_model
from fraud_training.data import Dataset, scorer_features, validate
from fraud_training.models import MODEL_KINDS, Fitted, ModelKind, fit, floor_to_float32
from fraud_training.onnx_export import (
    PARITY_TOLERANCE,
    ExportError,
    export,
    onnx_scores,
    to_onnx,
)
from fraud_training.synth import SynthConfig, generate
from hypothesis import given
from hypothesis import strategies as st
from skl2onnx import to_onnx as skl2onnx_convert


@pytest.fixture(scope="module")
def data() -> Dataset:
    frame = generate(SynthConfig(users=2500, days=4.0, seed=21, fraud_users_share=0.06))
    return scorer_features(validate(frame))


def _halves(data: Dataset) -> tuple[Dataset, Dataset]:
    cut = len(data) * 2 // 3
    mask = np.arange(len(data)) < cut
    return data.take(mask), data.take(~mask)


@given(st.floats(min_value=-1e38, max_value=1e38, allow_nan=False))
def test_snapped_thresholds_split_float32_inputs_the_same_way(t: float) -> None:
    snapped = floor_to_float32(np.array([t]))[0]
    assert snapped <= t
    assert np.float32(snapped) == snapped  # exactly representable
    x = np.float32(t)
    for candidate in (x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))):
        if np.isfinite(candidate):
            assert (float(candidate) <= t) == (float(candidate) <= snapped)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_onnx_scores_equal_native_scores(kind: ModelKind, data: Dataset, tmp_path: Path) -> None:
    train, held_out = _halves(data)
    fitted = fit(
        kind,
        train.x,
        None if kind == "isolation-forest" else train.y,
        feature_names=FEATURE_NAMES,
        feature_set=FEATURE_SET_VERSION,
    )
    manifest = export(
        fitted,
        tmp_path,
        version=f"{kind}-1",
        holdout=held_out.x,
        threshold=0.5,
        metrics={"average_precision": 0.5},
        data={"rows": len(data)},
    )
    assert manifest["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    assert manifest["parity"]["rows"] == min(len(held_out), 20_000)
    native = fitted.score(held_out.x)
    served = load_model(tmp_path).score(held_out.x)  # through the scorer's verifying loader
    assert np.max(np.abs(native - served)) <= 1e-5
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["feature_names"] == list(FEATURE_NAMES)
    assert written["feature_set_version"] == FEATURE_SET_VERSION
    assert written["model_kind"] == kind
    assert {"version", "sha256", "feature_types", "threshold", "metrics", "data"} <= set(written)


def test_isolation_forest_graph_is_small_and_equals_skl2onnx(data: Dataset) -> None:
    train, held_out = _halves(data)
    fitted = fit(
        "isolation-forest",
        train.x,
        None,
        feature_names=FEATURE_NAMES,
        feature_set=FEATURE_SET_VERSION,
        params={"n_estimators": 50, "max_samples": 256},
    )
    ours = to_onnx(fitted)
    assert len(ours.graph.node) <= 5
    reference = skl2onnx_convert(
        fitted.estimator, train.x[:1], target_opset={"": 15, "ai.onnx.ml": 3}
    )
    assert len(reference.graph.node) > 50 * 10  # a sub-graph per tree
    session = ort.InferenceSession(
        reference.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = held_out.x[:2000]
    (_, skl_scores) = session.run(None, {session.get_inputs()[0].name: x})
    # skl2onnx's "scores" output is decision_function = score_samples - offset
    expected = -(np.asarray(skl_scores)[:, 0] + fitted.estimator.offset_)
    assert np.max(np.abs(onnx_scores(ours, x) - expected)) < 1e-5


def test_threshold_snapping_is_what_makes_parity_hold(tmp_path: Path) -> None:
    """Two adjacent float32 values, the label telling them apart: LightGBM splits between them
    with a float64 threshold that float32 ONNX rounds onto one of them. Unsnapped, the export
    scores one class wrong and is refused; snapped (what ``fit`` does) it is exact."""
    a = np.float32(1.0)
    b = np.nextafter(a, np.float32(2.0))
    x = np.zeros((400, 3), np.float32)
    x[:200, 0], x[200:, 0] = a, b
    y = (np.arange(400) >= 200).astype(np.int8)
    params = {"n_estimators": 5, "min_child_samples": 5, "min_data_in_bin": 1}
    names = ("f0", "f1", "f2")
    raw = lgb.LGBMClassifier(**params, verbose=-1).fit(x, y)
    unsnapped = Fitted("lightgbm", raw, params, names, "v0")
    with pytest.raises(ExportError, match="differ from lightgbm by up to 4"):
        export(unsnapped, tmp_path, version="x", holdout=x, threshold=0.5, metrics={}, data={})
    assert not (tmp_path / "model.onnx").exists()
    snapped = fit("lightgbm", x, y, feature_names=names, feature_set="v0", params=params)
    manifest = export(snapped, tmp_path, version="x", holdout=x, threshold=0.5, metrics={}, data={})
    assert manifest["parity"]["max_abs_diff"] < 1e-6


def test_scorer_refuses_a_model_on_other_features(data: Dataset, tmp_path: Path) -> None:
    train, held_out = _halves(data)
    fitted = fit(
        "lightgbm", train.x, train.y, feature_names=FEATURE_NAMES, feature_set="handbook-15"
    )
    export(fitted, tmp_path, version="hb", holdout=held_out.x, threshold=0.5, metrics={}, data={})
    with pytest.raises(ModelError, match="feature set 'handbook-15'"):
        load_model(tmp_path)
