"""Exact TreeSHAP: against LightGBM's own ``pred_contrib`` and against Shapley values computed
by brute force over every subset of features (the definition TreeSHAP computes in polynomial
time), for LightGBM and a scikit-learn random forest."""

from __future__ import annotations

import math
from itertools import combinations

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pytest
from fraud_scorer.tree_shap import LEAF, Explainer, Tree, tree_shap
from fraud_training.trees import forest_trees, lightgbm_trees
from sklearn.ensemble import RandomForestClassifier

WIDTH = 6


def _data(n: int = 3000, seed: int = 4) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH))
    x[:, 3] = rng.integers(0, 4, n)  # a count, with ties at the thresholds
    logit = 1.5 * x[:, 0] - x[:, 1] * x[:, 2] + 0.8 * (x[:, 3] > 2) - 2.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return x, y


def _expected_given(tree: Tree, x: npt.NDArray[np.float64], known: set[int]) -> float:
    """E[tree(x) | the features in ``known``], path-dependent: an unknown feature's split is
    averaged over its children by their training cover."""

    def at(node: int) -> float:
        if tree.left[node] == LEAF:
            return float(tree.value[node])
        left, right = int(tree.left[node]), int(tree.right[node])
        if int(tree.feature[node]) in known:
            return at(left if tree.goes_left(node, x) else right)
        cover = tree.cover[node]
        return (tree.cover[left] * at(left) + tree.cover[right] * at(right)) / cover

    return at(0)


def _brute_force(tree: Tree, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    phi = np.zeros(WIDTH + 1)
    everyone = set(range(WIDTH))
    for i in range(WIDTH):
        others = everyone - {i}
        for size in range(WIDTH):
            weight = math.factorial(size) * math.factorial(WIDTH - size - 1) / math.factorial(WIDTH)
            for subset in combinations(sorted(others), size):
                s = set(subset)
                phi[i] += weight * (_expected_given(tree, x, s | {i}) - _expected_given(tree, x, s))
    phi[WIDTH] = _expected_given(tree, x, set())
    return phi


@pytest.mark.parametrize("leaves", [8, 31])
def test_lightgbm_contributions_agree_with_pred_contrib(leaves: int) -> None:
    x, y = _data()
    x[::37, 4] = np.nan  # missing values take each split's default direction
    model = lgb.LGBMClassifier(
        n_estimators=60, num_leaves=leaves, learning_rate=0.1, verbose=-1, random_state=1
    ).fit(x, y)
    trees = lightgbm_trees(model.booster_)
    rows = x[:200]
    ours = np.array([sum(tree_shap(t, r, WIDTH) for t in trees) for r in rows])
    theirs = model.booster_.predict(rows, pred_contrib=True)
    assert np.abs(ours - theirs).max() < 1e-9
    # contributions and the expected value sum to the raw score
    raw = model.booster_.predict(rows, raw_score=True)
    assert np.abs(ours.sum(axis=1) - raw).max() < 1e-9


def test_lightgbm_contributions_are_the_shapley_values() -> None:
    x, y = _data()
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=8, verbose=-1, random_state=2).fit(x, y)
    for tree in lightgbm_trees(model.booster_):
        for row in x[:5]:
            assert np.abs(tree_shap(tree, row, WIDTH) - _brute_force(tree, row)).max() < 1e-9


def test_random_forest_contributions_are_the_shapley_values_and_sum_to_its_probability() -> None:
    x, y = _data(1500)
    forest = RandomForestClassifier(
        n_estimators=4, max_depth=6, class_weight="balanced_subsample", random_state=3
    ).fit(x, y)
    trees = forest_trees(forest)
    rows = x[:6]
    for tree in trees:
        for row in rows:
            assert np.abs(tree_shap(tree, row, WIDTH) - _brute_force(tree, row)).max() < 1e-9
    ours = np.array([np.mean([tree_shap(t, r, WIDTH) for t in trees], axis=0) for r in rows])
    assert np.abs(ours.sum(axis=1) - forest.predict_proba(rows)[:, 1]).max() < 1e-9


@pytest.mark.parametrize(("leaves", "tabulated"), [(8, True), (31, False)])
def test_the_explainer_gives_the_same_values_tabulated_and_after_a_round_trip(
    leaves: int, tabulated: bool
) -> None:
    x, y = _data()
    x[::29, 2] = np.nan
    model = lgb.LGBMClassifier(
        n_estimators=40, num_leaves=leaves, max_depth=3 if leaves == 8 else -1, verbose=-1,
        random_state=5,
    ).fit(x, y)  # fmt: skip
    explainer = Explainer.from_json(
        Explainer(tuple(lightgbm_trees(model.booster_)), "logit", WIDTH).to_json()
    )
    assert explainer.tabulated is tabulated
    rows = x[:300]
    got = explainer.contributions(rows)
    assert np.abs(got - model.booster_.predict(rows, pred_contrib=True)).max() < 1e-9
