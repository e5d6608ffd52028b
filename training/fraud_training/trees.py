"""The trees of a fitted ensemble as :class:`fraud_scorer.tree_shap.Tree` arrays: what exact
TreeSHAP needs (structure, thresholds, leaf values and each node's training cover), which the
ONNX graph does not carry."""

from __future__ import annotations

from typing import Any

import numpy as np
from fraud_scorer.tree_shap import LEAF, Tree


class UnsupportedTree(ValueError):
    """A split TreeSHAP here cannot follow (a categorical split, zeros as missing)."""


def lightgbm_trees(booster: Any) -> list[Tree]:
    """A LightGBM booster's trees (binary objective: their outputs sum to the raw score)."""
    return [_lightgbm_tree(info["tree_structure"]) for info in booster.dump_model()["tree_info"]]


def _lightgbm_tree(root: dict[str, Any]) -> Tree:
    nodes: list[dict[str, Any]] = []
    children: list[tuple[int, int]] = []

    def visit(node: dict[str, Any]) -> int:
        index = len(nodes)
        nodes.append(node)
        children.append((LEAF, LEAF))
        if "split_feature" in node:
            if node.get("decision_type", "<=") != "<=":
                raise UnsupportedTree(f"split {node['decision_type']!r} (categorical)")
            if node.get("missing_type") == "Zero":
                raise UnsupportedTree("zeros as missing values")
            left = visit(node["left_child"])
            children[index] = (left, visit(node["right_child"]))
        return index

    visit(root)
    n = len(nodes)
    tree = Tree(
        left=np.array([c[0] for c in children], dtype=np.intp),
        right=np.array([c[1] for c in children], dtype=np.intp),
        feature=np.zeros(n, dtype=np.intp),
        threshold=np.zeros(n),
        default_left=np.zeros(n, dtype=bool),
        value=np.zeros(n),
        cover=np.zeros(n),
    )
    for i, node in enumerate(nodes):
        if "split_feature" in node:
            tree.feature[i] = node["split_feature"]
            tree.threshold[i] = node["threshold"]
            # Missing type "None": LightGBM reads a missing value as 0.0.
            tree.default_left[i] = (
                node["default_left"] if node.get("missing_type") == "NaN"
                else node["threshold"] >= 0.0
            )  # fmt: skip
            tree.cover[i] = node["internal_count"]
        else:
            tree.value[i] = node["leaf_value"]
            tree.cover[i] = node.get("leaf_count", 1)
    return tree


def forest_trees(forest: Any) -> list[Tree]:
    """A scikit-learn random forest's trees, each giving the fraud class's probability (the
    forest's probability is their mean)."""
    out = []
    for estimator in forest.estimators_:
        t = estimator.tree_
        value = t.value[:, 0, :]
        fraud = value[:, 1] / value.sum(axis=1)
        missing_left = getattr(t, "missing_go_to_left", None)
        out.append(
            Tree(
                left=t.children_left.astype(np.intp),
                right=t.children_right.astype(np.intp),
                feature=np.maximum(t.feature, 0).astype(np.intp),
                threshold=t.threshold.astype(np.float64),
                default_left=(
                    np.zeros(t.node_count, dtype=bool)
                    if missing_left is None
                    else np.asarray(missing_left, dtype=bool)
                ),
                value=fraud.astype(np.float64),
                cover=t.weighted_n_node_samples.astype(np.float64),
            )
        )
    return out
