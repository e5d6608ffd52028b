"""The FraudDetector CustomResourceDefinition, generated from :mod:`fraud_operator.spec`.

``python -m fraud_operator.crd > crds/frauddetector.yaml`` writes it; a test checks the
committed file is what this module generates, so the CRD and the operator cannot drift.

Kubernetes wants a *structural* schema: every node typed, no ``$ref``, no ``anyOf`` of types,
no ``title``. :func:`structural` turns pydantic's JSON schema into one, keeping required
fields, enums, patterns, bounds, defaults and descriptions.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import yaml

from fraud_operator.spec import GROUP, KIND, PLURAL, VERSION, FraudDetectorSpec, ModelRef

_KEEP: Final = (
    "type",
    "x-kubernetes-preserve-unknown-fields",
    "description",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "default",
    "format",
)


_SCALARS = ("string", "integer", "number", "boolean")


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Kubernetes structural schema equivalent to the pydantic JSON ``schema``."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        resolved = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**resolved, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:  # Optional[X]: X, and null is allowed
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(options) > 1 and all(o.get("type") in _SCALARS for o in options):
            # A scalar of several types (a librdkafka property): structural schemas cannot say
            # "string, integer or boolean", so the value is kept as given and pydantic checks it.
            return {"x-kubernetes-preserve-unknown-fields": True}
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {schema['anyOf']} structurally")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        out = structural({**options[0], **rest}, defs)
        if rest.get("default", ...) is None:
            out.pop("default", None)
        out["nullable"] = True
        return out
    if "const" in schema:
        schema = {**schema, "enum": [schema["const"]]}
    out = {k: v for k, v in schema.items() if k in _KEEP}
    # JSON Schema's numeric exclusive bounds are OpenAPI v3.0 booleans beside the bound.
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if exclusive in out and not isinstance(out[exclusive], bool):
            out[bound] = out[exclusive]
            out[exclusive] = True
    if out.get("type") == "integer" and isinstance(out.get("default"), float):
        out["default"] = int(out["default"])
    if "properties" in schema:
        out["type"] = "object"
        out["properties"] = {
            name: structural(sub, defs) for name, sub in schema["properties"].items()
        }
        if schema.get("required"):
            out["required"] = list(schema["required"])
    if "items" in schema:
        out["items"] = structural(schema["items"], defs)
    if isinstance(schema.get("additionalProperties"), dict):  # a map: its values' schema
        out["additionalProperties"] = structural(schema["additionalProperties"], defs)
    if "type" not in out:
        raise ValueError(f"untyped schema node: {schema}")
    return out


def _status_schema() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    }
    return {
        "type": "object",
        "properties": {
            "observedGeneration": {"type": "integer"},
            "phase": {"type": "string"},
            "stableVersion": {"type": "string"},
            "canaryVersion": {"type": "string"},
            "canaryWeight": {"type": "integer"},
            "replicas": {"type": "integer"},
            "readyReplicas": {"type": "integer"},
            "entityStage": {
                "type": "object",
                "description": "the entity stage's replicas, when the features need it",
                "properties": {
                    "replicas": {"type": "integer"},
                    "readyReplicas": {"type": "integer"},
                },
            },
            "rulesVersion": {"type": "string"},
            "rulesVersionDesired": {"type": "string"},
            "conditions": {"type": "array", "items": condition},
            "rollout": _rollout_status_schema(),
        },
        # kopf keeps its own bookkeeping under status.kopf.
        "x-kubernetes-preserve-unknown-fields": True,
    }


def _rollout_status_schema() -> dict[str, Any]:
    """``status.rollout`` (:meth:`fraud_operator.rollout.State.to_status`), so that
    ``kubectl explain fraudDetector.status.rollout`` describes it."""
    model = structural(ModelRef.model_json_schema(by_alias=True))

    def text(description: str) -> dict[str, Any]:
        return {"type": "string", "nullable": True, "description": description}

    def release(description: str) -> dict[str, Any]:
        return {**model, "nullable": True, "description": description}

    properties: dict[str, Any] = {
        "phase": {
            "type": "string",
            "enum": ["Stable", "Preflight", "Shadow", "Canary", "Promoting", "RolledBack"],
        },
        "stable": release("the model every user not on the canary gets"),
        "candidate": release("the model being rolled out"),
        "stableRules": text("the version of the rules stable runs"),
        "candidateRules": text("the version of the rules being rolled out"),
        "step": {"type": "integer", "description": "index of the current canary step"},
        "since": {**text("when the current phase or step began"), "format": "date-time"},
        "lastAnalysisAt": {**text("when the candidate was last judged"), "format": "date-time"},
        "failures": {"type": "integer", "description": "failed analyses in a row"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "rejected": text("the release last rolled back (not retried by itself)"),
        "lastAnalysis": {
            "type": "object",
            "description": "the last analysis: each check's measure, limit and verdict, "
            "and every rule's hit rate on both tracks",
            "x-kubernetes-preserve-unknown-fields": True,
        },
    }
    # The operator writes the whole status, absent values as null.
    return {
        "type": "object",
        "description": "the rollout's state: read back from the cluster on every pass, so "
        "a lost status is recovered (docs/rollouts.md)",
        "properties": {k: {**v, "nullable": True} for k, v in properties.items()},
    }


PRINTER_COLUMNS: Final = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryVersion"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    # Why it is (not) Ready: the reason always, the message with -o wide.
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Message",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
    },
]


def crd_manifest() -> dict[str, Any]:
    spec = structural(FraudDetectorSpec.model_json_schema(by_alias=True))
    spec["description"] = "What to score, with which model and rules, and how to roll out."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["fd"],
                "categories": ["fraud"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER: Final = (
    "# Generated by `python -m fraud_operator.crd` from fraud_operator/spec.py; do not edit.\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(crd_manifest(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
