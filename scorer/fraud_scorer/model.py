"""Model artifacts: ``model.onnx`` + ``manifest.json``, verified before use.

An artifact is pinned by its **digest**, ``sha256:<hex>`` of the ``manifest.json`` bytes. The
manifest names the sha256 of ``model.onnx``, so the one digest pins both files: the graph and
everything that says how to read it (input columns, output name, positive class index; flipping
the index inverts every score). It works like an OCI image digest, which pins a manifest that
pins the layers.

A scorer refuses a model whose manifest does not match the digest it was given, whose file hash
differs from the manifest, whose feature set version or feature names are not the ones this
scorer computes, or whose graph does not accept that many features or does not return finite
probabilities on a warm-up batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fraud_scorer.feature_sets import V1, FeatureSet
from fraud_scorer.tree_shap import Explainer

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
EXPLAINER_FILE = "explainer.json"


class ModelError(Exception):
    """The model artifact cannot be used; the message says what is wrong and what to do."""


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    version: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    feature_names: list[str] = Field(min_length=1)
    feature_types: list[str] | None = None
    feature_set_version: str
    threshold: float | None = None
    output_name: str = "probabilities"
    positive_class_index: int = 1
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    # explainer.json: the trees with their covers, for reason codes (tree_shap.Explainer)
    explainer_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_of(manifest: bytes) -> str:
    """The artifact digest of a manifest's bytes."""
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def artifact_digest(model_dir: Path) -> str:
    """The digest that pins the artifact in ``model_dir`` (what a FraudDetector names)."""
    return digest_of((model_dir / MANIFEST_FILE).read_bytes())


def read_manifest(model_dir: Path) -> ModelManifest:
    path = model_dir / MANIFEST_FILE
    try:
        return ModelManifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ModelError(
            f"no {MANIFEST_FILE} in {model_dir}: a model is a directory holding "
            f"{MODEL_FILE} and {MANIFEST_FILE}"
        ) from exc
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ModelError(f"{path} is not a valid model manifest: {exc}") from exc


@dataclass(frozen=True)
class Explained:
    """Rows as the model read them, and each one's contributions (the expected value last)."""

    names: list[str]
    inputs: npt.NDArray[np.float64]
    contributions: npt.NDArray[np.float64]
    link: str  # "logit": they add up to the log-odds; "probability": to the probability


class Model:
    """An ONNX classifier ready to score feature rows ordered as its feature set's names."""

    def __init__(
        self,
        manifest: ModelManifest,
        session: ort.InferenceSession,
        features: FeatureSet = V1,
        explainer: Explainer | None = None,
    ) -> None:
        self.manifest = manifest
        self.explainer = explainer
        self.version = manifest.version
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = manifest.output_name
        self._positive = manifest.positive_class_index
        index = features.index
        wanted = [index[n] for n in manifest.feature_names]
        self._columns: list[int] | None = (
            None if wanted == list(range(len(features.names))) else wanted
        )

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Fraud probability of each row (a 2-D float32 array of all scorer features)."""
        x = rows if self._columns is None else rows[:, self._columns]
        (probs,) = self._session.run([self._output], {self._input: x})
        out: npt.NDArray[np.float32] = np.asarray(probs)[:, self._positive]
        return out

    def explain(self, rows: npt.NDArray[np.float64]) -> Explained | None:
        """Each row's SHAP contributions for rows of all scorer features; None without an
        explainer."""
        if self.explainer is None:
            return None
        x = rows if self._columns is None else rows[:, self._columns]
        return Explained(
            self.manifest.feature_names, x, self.explainer.contributions(x), self.explainer.link
        )


def _explainer(model_dir: Path, manifest: ModelManifest) -> Explainer | None:
    if manifest.explainer_sha256 is None:
        return None
    path = model_dir / EXPLAINER_FILE
    if not path.is_file() or sha256_file(path) != manifest.explainer_sha256:
        raise ModelError(
            f"refusing model {manifest.version!r}: {path} is missing or not the one its "
            "manifest names (explainer_sha256); re-export it"
        )
    try:
        return Explainer.from_json(path.read_bytes())
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"refusing model {manifest.version!r}: {path}: {exc}") from exc


def load_model(
    model_dir: Path,
    *,
    threads: int = 1,
    digest: str | None = None,
    features: FeatureSet = V1,
) -> Model:
    """Load and verify the artifact in ``model_dir`` (and, given ``digest``, that it is the
    pinned one) for a scorer computing ``features``; raise :class:`ModelError` if unusable."""
    manifest = read_manifest(model_dir)
    if digest is not None and (actual_digest := artifact_digest(model_dir)) != digest:
        raise ModelError(
            f"refusing model {manifest.version!r}: its manifest has digest {actual_digest}, "
            f"the scorer was told {digest}; the artifact changed after it was fetched"
        )
    onnx_path = model_dir / MODEL_FILE
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path} is missing")
    actual = sha256_file(onnx_path)
    if actual != manifest.sha256:
        raise ModelError(
            f"refusing model {manifest.version!r}: {onnx_path} has sha256 {actual[:16]}..., "
            f"the manifest says {manifest.sha256[:16]}...; the file is corrupt or not the one "
            "that was trained - re-export it"
        )
    if manifest.feature_set_version != features.version:
        raise ModelError(
            f"refusing model {manifest.version!r}: trained on feature set "
            f"{manifest.feature_set_version!r}, this scorer computes {features.version!r}"
        )
    unknown = [n for n in manifest.feature_names if n not in features.index]
    if unknown:
        raise ModelError(
            f"refusing model {manifest.version!r}: features {unknown} are not computed by this "
            f"scorer (it computes {list(features.names)})"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelError(
            f"refusing model {manifest.version!r}: onnxruntime cannot load it: {exc}"
        ) from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(
            f"refusing model {manifest.version!r}: expected 1 input, got {len(inputs)}"
        )
    width = inputs[0].shape[-1]
    if isinstance(width, int) and width != len(manifest.feature_names):
        raise ModelError(
            f"refusing model {manifest.version!r}: the graph takes {width} features, "
            f"the manifest lists {len(manifest.feature_names)}"
        )
    if manifest.output_name not in {o.name for o in session.get_outputs()}:
        raise ModelError(
            f"refusing model {manifest.version!r}: no output named {manifest.output_name!r}"
        )
    model = Model(manifest, session, features, _explainer(model_dir, manifest))
    try:
        warm = model.score(np.zeros((8, len(features.names)), dtype=np.float32))
    except Exception as exc:
        raise ModelError(
            f"refusing model {manifest.version!r}: warm-up inference failed: {exc}"
        ) from exc
    if warm.shape != (8,) or not np.all(np.isfinite(warm)):
        raise ModelError(f"refusing model {manifest.version!r}: warm-up returned no probabilities")
    return model
