"""The CRD is generated from the spec models and the committed file is that output."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fraud_operator.crd import crd_manifest, render, structural

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_is_the_generated_one() -> None:
    committed = (ROOT / "crds/frauddetector.yaml").read_text()
    assert committed == render(), "run: python -m fraud_operator.crd > crds/frauddetector.yaml"


def _walk(node: object) -> list[dict[str, object]]:
    out = []
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            out += _walk(v)
    elif isinstance(node, list):
        for v in node:
            out += _walk(v)
    return out


def test_schema_is_structural_and_keeps_the_constraints() -> None:
    version = crd_manifest()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for node in _walk(schema):
        if "properties" in node or "items" in node:
            assert node.get("type") in ("object", "array")
        assert "$ref" not in node and "anyOf" not in node and "title" not in node
    props = schema["properties"]
    assert schema["required"] == ["kafka", "topics", "model"]
    assert props["rules"]["items"]["properties"]["action"]["enum"] == ["review", "block"]
    assert props["rules"]["items"]["properties"]["action"]["default"] == "review"
    assert props["decision"]["properties"]["reviewAt"]["maximum"] == 1.0
    assert props["scaling"]["properties"]["minReplicas"]["minimum"] == 1
    assert props["model"]["properties"]["digest"]["pattern"] == "^sha256:[0-9a-f]{64}$"
    analysis = props["rollout"]["properties"]["analysis"]["properties"]
    assert analysis["maxAlertRateRatio"] == {
        "type": "number",
        "default": 2.0,
        "minimum": 0.0,
        "exclusiveMinimum": True,
    } | {k: v for k, v in analysis["maxAlertRateRatio"].items() if k == "description"}
    assert props["kafka"]["properties"]["authentication"]["nullable"] is True
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == [
        "Ready", "Phase", "Stable", "Canary", "Weight", "Replicas", "Reason", "Age", "Message",
    ]  # fmt: skip
    wide_only = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide_only == ["Message"]  # long: with -o wide only
    rollout = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["rollout"]
    assert rollout["properties"]["candidate"]["properties"]["digest"]["pattern"]
    assert {"phase", "stable", "candidate", "lastAnalysis"} <= set(rollout["properties"])
    names = crd_manifest()["spec"]["names"]
    assert (names["shortNames"], crd_manifest()["spec"]["scope"]) == (["fd"], "Namespaced")


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            {"type": "integer", "nullable": True},
        ),
        (
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "number", "minimum": 0, "exclusiveMinimum": True},
        ),
        ({"const": "x", "type": "string"}, {"type": "string", "enum": ["x"]}),
        ({"type": "integer", "default": 2.0}, {"type": "integer", "default": 2}),
    ],
)
def test_structural_conversions(schema: dict[str, object], expected: dict[str, object]) -> None:
    assert structural(schema) == expected


def test_untyped_nodes_are_refused() -> None:
    with pytest.raises(ValueError, match="untyped"):
        structural({"description": "anything"})
    assert yaml.safe_load(render())["kind"] == "CustomResourceDefinition"
