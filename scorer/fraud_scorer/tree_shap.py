"""Exact SHAP values of tree ensembles (path-dependent TreeSHAP, Lundberg et al. 2018, Algorithm 2).

A tree is given as arrays (:class:`Tree`): children, split feature and threshold, where a
missing value goes, leaf values, and each node's cover (the training samples that reached it).
:func:`tree_shap` returns, for one row, each feature's contribution to the tree's output and,
last, the tree's expected output (its cover-weighted mean leaf value): they sum to the output.
This is what LightGBM's ``pred_contrib`` computes (``tests/scorer/test_tree_shap.py`` holds
them within 1e-9), and for a model that averages or sums trees, contributions average or sum.

The recursion carries the path of features from the root (their "zero" and "one" fractions and
the permutation weights) and is O(leaves x depth^2) per tree: a few milliseconds a row for 200
trees in Python, too slow for every alert. A tree's SHAP values depend on a row only through the
way it goes at each split, so :class:`Explainer` computes them once per combination of
outcomes of a small tree (128 for the 7 splits of a depth-3 tree) at load, and then explains a
batch of rows with a comparison, a bit packing and a table lookup per tree, in numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Final, Literal

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
    return shap_of_outcomes(tree, lambda node: tree.goes_left(node, x), width)


def shap_of_outcomes(
    tree: Tree, goes_left: Callable[[int], bool], width: int
) -> npt.NDArray[np.float64]:
    """:func:`tree_shap` of a row known only by the way it goes at each split: the result
    depends on the row through nothing else."""
    phi = np.zeros(width + 1)
    phi[width] = tree.expected_value()
    _recurse(tree, goes_left, phi, 0, _Path(), 1.0, 1.0, -1)
    return phi


def _recurse(
    tree: Tree,
    goes_left: Callable[[int], bool],
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
    hot, cold = (left, right) if goes_left(node) else (right, left)
    feature = int(tree.feature[node])
    iz = io = 1.0
    for k in range(1, len(path.d)):
        if path.d[k] == feature:
            iz, io = path.z[k], path.o[k]
            path.unwind(k)
            break
    cover = tree.cover[node]
    _recurse(tree, goes_left, phi, hot, path, iz * tree.cover[hot] / cover, io, feature)
    _recurse(tree, goes_left, phi, cold, path, iz * tree.cover[cold] / cover, 0.0, feature)


# Trees with more splits than this are explained row by row: 2^splits outcomes to tabulate
# (a depth-3 tree has 7 splits: 128, 0.6 s at load for 200 trees).
MAX_TABLE_SPLITS: Final = 8
Link = Literal["logit", "probability"]


class Explainer:
    """An ensemble's SHAP values: ``logit`` (boosted trees: their outputs sum to the log-odds)
    or ``probability`` (a forest: their outputs are averaged)."""

    def __init__(self, trees: tuple[Tree, ...], link: Link, width: int) -> None:
        self.trees, self.link, self.width = trees, link, width
        small = all(int((t.left != LEAF).sum()) <= MAX_TABLE_SPLITS for t in trees)
        self.tabulated = small and bool(trees)
        self._tables = _tables(self) if self.tabulated else None

    def contributions(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Each row's ``width`` contributions and, last, the expected value: they sum to the
        ensemble's raw output (the log-odds, or the probability)."""
        tables = self._tables
        if tables is None:
            out = np.array([sum(tree_shap(t, row, self.width) for t in self.trees) for row in x])
        else:
            out = _tabulated(tables, x)
        if self.link == "probability":
            out /= len(self.trees)
        return out  # type: ignore[no-any-return]

    def to_json(self) -> bytes:
        fields = ("left", "right", "feature", "threshold", "default_left", "value", "cover")
        trees = [{f: getattr(t, f).tolist() for f in fields} for t in self.trees]
        doc = {"link": self.link, "width": self.width, "trees": trees}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Explainer:
        doc = json.loads(data)
        trees = tuple(
            Tree(
                left=np.array(t["left"], dtype=np.intp),
                right=np.array(t["right"], dtype=np.intp),
                feature=np.array(t["feature"], dtype=np.intp),
                threshold=np.array(t["threshold"], dtype=np.float64),
                default_left=np.array(t["default_left"], dtype=bool),
                value=np.array(t["value"], dtype=np.float64),
                cover=np.array(t["cover"], dtype=np.float64),
            )
            for t in doc["trees"]
        )
        return cls(trees, doc["link"], int(doc["width"]))


@dataclass(frozen=True)
class _Tables:
    feature: npt.NDArray[np.intp]  # trees x splits
    threshold: npt.NDArray[np.float64]  # trees x splits (padding: +inf, always "left")
    default_left: npt.NDArray[np.bool_]
    shap: npt.NDArray[np.float64]  # trees x 2^splits x (width + 1)


def _tables(e: Explainer) -> _Tables:
    splits = max(int((t.left != LEAF).sum()) for t in e.trees)
    n = len(e.trees)
    feature = np.zeros((n, splits), dtype=np.intp)
    threshold = np.full((n, splits), np.inf)
    default_left = np.ones((n, splits), dtype=bool)
    shap = np.zeros((n, 1 << splits, e.width + 1))
    for k, tree in enumerate(e.trees):
        nodes = np.flatnonzero(tree.left != LEAF)
        slot = {int(node): i for i, node in enumerate(nodes)}
        feature[k, : len(nodes)] = tree.feature[nodes]
        threshold[k, : len(nodes)] = tree.threshold[nodes]
        default_left[k, : len(nodes)] = tree.default_left[nodes]
        patterns = np.arange(1 << len(nodes))
        bits = {node: (patterns >> i & 1).astype(bool) for node, i in slot.items()}
        shap[k, :, e.width] = tree.expected_value()
        for leaf, path in _leaf_paths(tree):
            _add_leaf(shap[k, : len(patterns)], tree, leaf, path, bits)
        if len(nodes) < splits:  # the padding's bits do not matter: repeat the table
            shap[k] = shap[k][np.arange(1 << splits) & ((1 << len(nodes)) - 1)]
    return _Tables(feature, threshold, default_left, shap)


def _leaf_paths(tree: Tree) -> list[tuple[int, list[tuple[int, bool]]]]:
    """Each leaf and its path from the root: (split node, whether the path goes left)."""
    out: list[tuple[int, list[tuple[int, bool]]]] = []
    stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        if tree.left[node] == LEAF:
            out.append((node, path))
        else:
            stack.append((int(tree.left[node]), [*path, (node, True)]))
            stack.append((int(tree.right[node]), [*path, (node, False)]))
    return out


def _add_leaf(
    table: npt.NDArray[np.float64],
    tree: Tree,
    leaf: int,
    path: list[tuple[int, bool]],
    bits: dict[int, npt.NDArray[np.bool_]],
) -> None:
    """A leaf's share of every outcome pattern's SHAP values, in closed form. Path-dependent
    TreeSHAP's value of a coalition S is, per leaf, ``v * prod(o_j if j in S else z_j)`` over
    the features j on the leaf's path: ``o_j`` whether the row takes the path's way at every
    split on j (per pattern), ``z_j`` the share of the training cover that does. The Shapley
    value of such a product is a sum over the subsets of the path's other features: a few
    array operations per leaf (the recursion per pattern took 2.6 s at load for 200 trees)."""
    zero: dict[int, float] = {}
    one: dict[int, npt.NDArray[np.bool_]] = {}
    for (node, left), (child, _) in zip(path, [*path[1:], (leaf, True)], strict=True):
        j = int(tree.feature[node])
        zero[j] = zero.get(j, 1.0) * tree.cover[child] / tree.cover[node]
        way = bits[node] if left else ~bits[node]
        one[j] = one[j] & way if j in one else way
    features = list(zero)
    d, value = len(features), float(tree.value[leaf])
    for i in features:
        others = [j for j in features if j != i]
        total = np.zeros(table.shape[0])
        for size in range(d):
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            for known in combinations(others, size):
                rest = math.prod(zero[j] for j in others if j not in known)
                term = np.full(table.shape[0], weight * rest)
                for j in known:
                    term = term * one[j]
                total += term
        table[:, i] += value * total * (one[i] - zero[i])


def _tabulated(t: _Tables, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    values = x[:, t.feature]  # rows x trees x splits
    left = np.where(np.isnan(values), t.default_left, values <= t.threshold)
    weights = 1 << np.arange(t.feature.shape[1])
    pattern = (left * weights).sum(axis=2)  # rows x trees
    trees = np.arange(t.feature.shape[0])
    return t.shap[trees, pattern].sum(axis=1)  # type: ignore[no-any-return]
