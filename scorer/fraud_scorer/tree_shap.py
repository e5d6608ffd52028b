"""Exact SHAP values of tree ensembles (path-dependent TreeSHAP, Lundberg et al. 2018, Algorithm 2).

A tree is given as arrays (:class:`Tree`): children, split feature and threshold, where a
missing value goes, leaf values, and each node's cover (the training samples that reached it).
:func:`tree_shap` returns, for one row, each feature's contribution to the tree's output and,
last, the tree's expected output (its cover-weighted mean leaf value): they sum to the output.
This is what LightGBM's ``pred_contrib`` computes (``tests/scorer/test_tree_shap.py`` holds
them within 1e-9), and for a model that averages or sums trees, contributions average or sum.

The recursion carries the path of features from the root (their "zero" and "one" fractions and
the permutation weights) and is O(leaves x depth^2) per tree. Written for clarity and exactness;
how it is made fast enough for alerts is the caller's business (docs/sinks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

LEAF = -1


@dataclass(frozen=True)
class Tree:
    """One binary tree; node 0 is the root. A row goes left when ``x[feature] <= threshold``;
    a missing value (NaN) goes left where ``default_left``."""

    left: npt.NDArray[np.intp]  # LEAF for leaves
    right: npt.NDArray[np.intp]
    feature: npt.NDArray[np.intp]
    threshold: npt.NDArray[np.float64]
    default_left: npt.NDArray[np.bool_]
    value: npt.NDArray[np.float64]  # a leaf's output (unused on inner nodes)
    cover: npt.NDArray[np.float64]

    def goes_left(self, node: int, x: npt.NDArray[np.float64]) -> bool:
        v = x[self.feature[node]]
        if math.isnan(v):
            return bool(self.default_left[node])
        return bool(v <= self.threshold[node])

    def expected_value(self) -> float:
        leaves = self.left == LEAF
        return float((self.value[leaves] * self.cover[leaves]).sum() / self.cover[0])

    def predict(self, x: npt.NDArray[np.float64]) -> float:
        node = 0
        while self.left[node] != LEAF:
            node = int(self.left[node] if self.goes_left(node, x) else self.right[node])
        return float(self.value[node])


class _Path:
    """The unique features on the path so far: feature, zero and one fractions, weight."""

    __slots__ = ("d", "o", "w", "z")

    def __init__(self) -> None:
        self.d: list[int] = []
        self.z: list[float] = []
        self.o: list[float] = []
        self.w: list[float] = []

    def copy(self) -> _Path:
        p = _Path()
        p.d, p.z, p.o, p.w = self.d[:], self.z[:], self.o[:], self.w[:]
        return p

    def extend(self, pz: float, po: float, pi: int) -> None:
        n = len(self.d)
        self.d.append(pi)
        self.z.append(pz)
        self.o.append(po)
        self.w.append(1.0 if n == 0 else 0.0)
        w = self.w
        for i in range(n - 1, -1, -1):
            w[i + 1] += po * w[i] * (i + 1) / (n + 1)
            w[i] = pz * w[i] * (n - i) / (n + 1)

    def unwind(self, i: int) -> None:
        top = len(self.d) - 1
        one, zero, w = self.o[i], self.z[i], self.w
        carry = w[top]
        for j in range(top - 1, -1, -1):
            if one != 0.0:
                t = w[j]
                w[j] = carry * (top + 1) / ((j + 1) * one)
                carry = t - w[j] * zero * (top - j) / (top + 1)
            else:
                w[j] = (w[j] * (top + 1)) / (zero * (top - j))
        for j in range(i, top):
            self.d[j], self.z[j], self.o[j] = self.d[j + 1], self.z[j + 1], self.o[j + 1]
        del self.d[top], self.z[top], self.o[top], self.w[top]

    def unwound_sum(self, i: int) -> float:
        """The sum of the weights once feature ``i`` is unwound (without unwinding)."""
        top = len(self.d) - 1
        one, zero, w = self.o[i], self.z[i], self.w
        carry, total = w[top], 0.0
        for j in range(top - 1, -1, -1):
            if one != 0.0:
                t = carry * (top + 1) / ((j + 1) * one)
                total += t
                carry = w[j] - t * zero * (top - j) / (top + 1)
            else:
                total += (w[j] / zero) / ((top - j) / (top + 1))
        return total


def tree_shap(tree: Tree, x: npt.NDArray[np.float64], width: int) -> npt.NDArray[np.float64]:
    """Contributions of the ``width`` features to ``tree``'s output on ``x``, then the tree's
    expected output: ``width + 1`` values that sum to ``tree.predict(x)``."""
    phi = np.zeros(width + 1)
    phi[width] = tree.expected_value()
    _recurse(tree, x, phi, 0, _Path(), 1.0, 1.0, -1)
    return phi


def _recurse(
    tree: Tree,
    x: npt.NDArray[np.float64],
    phi: npt.NDArray[np.float64],
    node: int,
    path: _Path,
    pz: float,
    po: float,
    pi: int,
) -> None:
    path = path.copy()
    path.extend(pz, po, pi)
    if tree.left[node] == LEAF:
        value = tree.value[node]
        for i in range(1, len(path.d)):
            phi[path.d[i]] += path.unwound_sum(i) * (path.o[i] - path.z[i]) * value
        return
    left, right = int(tree.left[node]), int(tree.right[node])
    hot, cold = (left, right) if tree.goes_left(node, x) else (right, left)
    feature = int(tree.feature[node])
    iz = io = 1.0
    for k in range(1, len(path.d)):
        if path.d[k] == feature:
            iz, io = path.z[k], path.o[k]
            path.unwind(k)
            break
    cover = tree.cover[node]
    _recurse(tree, x, phi, hot, path, iz * tree.cover[hot] / cover, io, feature)
    _recurse(tree, x, phi, cold, path, iz * tree.cover[cold] / cover, 0.0, feature)
