from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fraud_scorer.features import FEATURE_NAMES
from fraud_scorer.model import ModelError, artifact_digest, load_model, sha256_file


@pytest.fixture
def artifact(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def edit_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_verified_model_scores_batches(artifact: Path) -> None:
    model = load_model(artifact)
    scores = model.score(np.zeros((5, len(FEATURE_NAMES)), dtype=np.float32))
    assert scores.shape == (5,) and np.all((scores >= 0) & (scores <= 1))
    assert model.version == "test-1"


def test_a_tampered_file_is_refused(artifact: Path) -> None:
    with (artifact / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match=r"sha256 .* the manifest says"):
        load_model(artifact)


def test_a_tampered_explainer_is_refused(artifact: Path) -> None:
    """The trees behind the reason codes are pinned by the manifest like the graph."""
    assert load_model(artifact).explainer is not None
    explainer = artifact / "explainer.json"
    explainer.write_bytes(explainer.read_bytes().replace(b'"value":[', b'"value":[1e9,', 1))
    with pytest.raises(ModelError, match="explainer_sha256"):
        load_model(artifact)


def test_the_scorer_refuses_an_artifact_changed_after_its_fetch(artifact: Path) -> None:
    """The scorer is told the digest too: a manifest edited on the pod's volume after the init
    container verified it (the class index flipped: every score inverted) is refused."""
    digest = artifact_digest(artifact)
    assert load_model(artifact, digest=digest).version == "test-1"
    edit_manifest(artifact, positive_class_index=0)
    with pytest.raises(ModelError, match="changed after it was fetched"):
        load_model(artifact, digest=digest)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"feature_set_version": "v0"}, "trained on feature set 'v0'"),
        ({"feature_names": [*FEATURE_NAMES[:-1], "shoe_size"]}, r"features \['shoe_size'\]"),
        ({"feature_names": list(FEATURE_NAMES[:-1])}, "the graph takes 14 features"),
        ({"output_name": "scores"}, "no output named 'scores'"),
        ({"sha256": "nothex"}, "not a valid model manifest"),
    ],
)
def test_manifest_mismatches_are_refused(
    artifact: Path, changes: dict[str, object], message: str
) -> None:
    edit_manifest(artifact, **changes)
    with pytest.raises(ModelError, match=message):
        load_model(artifact)


def test_missing_manifest_and_garbage_onnx_are_refused(artifact: Path) -> None:
    (artifact / "model.onnx").write_bytes(b"not an onnx graph")
    edit_manifest(artifact, sha256=sha256_file(artifact / "model.onnx"))
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        load_model(artifact)
    (artifact / "manifest.json").unlink()
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        load_model(artifact)
