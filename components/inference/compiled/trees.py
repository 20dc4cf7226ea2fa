"""Tree ensembles as flat arrays, walked for a few rows at once with NumPy.

scikit-learn predicts a forest tree by tree (a Python call, input checks and an allocation each:
~15 µs a tree for one row, 3-6 ms for a 200-tree forest) and a boosted model predictor by
predictor. Here every node of every tree sits in one set of arrays and all trees advance one level
per step for all rows together, so one row costs ~5 array operations a level (~120 µs for a
200-tree forest whose paths run 25 levels deep), and the walk ends when every tree has. Past
`WALK_MAX_ROWS` rows scikit-learn's compiled loops win, and the estimator answers itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from components.inference.compiled.errors import NotCompiled

# Rows up to which the arrays are walked; above it the estimator's own compiled loops are faster.
WALK_MAX_ROWS = 64


# From this level on, every other level, the walk stops if every tree has reached a leaf (a check
# costs about half a level).
EARLY_EXIT_LEVEL = 8


@dataclass(frozen=True)
class FlatForest:
    """Every tree's nodes in one set of arrays, addressed by twice the node's index.

    Node i lives at slot 2i: `feature[2i]`, `threshold[2i]`; its right child's slot is
    `children[2i]` and its left child's `children[2i + 1]`, so one step is
    `slot = children[slot + (x[feature[slot]] <= threshold[slot])]`. A leaf is its own child on
    both sides, so a walk may run past a shallow tree's leaves.
    """

    roots: np.ndarray  # (trees,) slot of each tree's root
    feature: np.ndarray  # (2 * nodes,) column tested (0 at leaves)
    threshold: np.ndarray  # (2 * nodes,) go left when value <= threshold (+inf at leaves)
    children: np.ndarray  # (2 * nodes,) child slots: right at 2i, left at 2i + 1
    missing_left: np.ndarray | None  # (2 * nodes,) where NaN goes; None when no node saw missing values
    values: np.ndarray  # (nodes, outputs) a leaf's contribution to each output (zero elsewhere)
    depth: int
    as_float32: bool  # scikit-learn's trees compare float32 inputs

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """(rows, trees) the node index of the leaf each row reaches in each tree."""
        if self.as_float32:
            X = X.astype(np.float32).astype(np.float64)
        rows, width = X.shape
        flat = np.ascontiguousarray(X).ravel()
        missing = self.missing_left if self.missing_left is not None and np.isnan(flat).any() else None
        feature, threshold, children = self.feature, self.threshold, self.children
        slot = np.broadcast_to(self.roots, (rows, len(self.roots)))
        base = None if rows == 1 else (np.arange(rows, dtype=np.intp) * width)[:, None]
        step = slot
        for level in range(self.depth):
            column = feature.take(slot)
            value = flat.take(column if base is None else base + column)
            left = value <= threshold.take(slot)
            if missing is not None:
                left = np.where(np.isnan(value), missing.take(slot), left)
            step = children.take(slot + left)
            if level >= EARLY_EXIT_LEVEL and level & 1 and (step == slot).all():
                break
            slot = step
        return step >> 1

    def total(self, X: np.ndarray) -> np.ndarray:
        """(rows, outputs) the sum over trees of the reached leaves' values."""
        return self.values[self.leaves(X)].sum(axis=1)


def _flatten(trees: list[dict[str, np.ndarray]], outputs: int, as_float32: bool) -> FlatForest:
    sizes = [len(t["feature"]) for t in trees]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    feature, threshold, left, right, missing, values, depth = [], [], [], [], [], [], 0
    for tree, offset in zip(trees, offsets, strict=True):
        leaf = tree["leaf"]
        own = np.arange(len(leaf), dtype=np.intp) + offset
        feature.append(np.where(leaf, 0, tree["feature"]).astype(np.intp))
        threshold.append(np.where(leaf, np.inf, tree["threshold"]).astype(np.float64))
        left.append(np.where(leaf, own, tree["left"] + offset))
        right.append(np.where(leaf, own, tree["right"] + offset))
        missing.append(tree["missing_left"].astype(bool))
        values.append(np.where(leaf[:, None], tree["values"], 0.0))
        depth = max(depth, int(tree["depth"]))
    children = np.empty(2 * sum(sizes), dtype=np.intp)
    children[0::2] = 2 * np.concatenate(right)
    children[1::2] = 2 * np.concatenate(left)
    missing_left = np.repeat(np.concatenate(missing), 2)
    return FlatForest(
        roots=2 * offsets,
        feature=np.repeat(np.concatenate(feature), 2),
        threshold=np.repeat(np.concatenate(threshold), 2),
        children=children,
        missing_left=missing_left if missing_left.any() else None,
        values=np.concatenate(values).reshape(-1, outputs),
        depth=depth,
        as_float32=as_float32,
    )


def flatten_sklearn_forest(forest: Any) -> FlatForest:
    """A RandomForest / ExtraTrees (classifier: leaf class fractions; regressor: leaf means)."""
    if getattr(forest, "n_outputs_", 1) != 1:
        raise NotCompiled("a forest with several outputs")
    trees = []
    classifier = hasattr(forest, "classes_")
    for estimator in forest.estimators_:
        tree = estimator.tree_
        leaf = tree.children_left == -1
        value = tree.value[:, 0, :] if classifier else tree.value[:, 0, :1]
        missing = getattr(tree, "missing_go_to_left", None)
        trees.append(
            {
                "leaf": leaf,
                "feature": tree.feature,
                "threshold": tree.threshold,
                "left": tree.children_left,
                "right": tree.children_right,
                "missing_left": np.zeros(len(leaf), bool) if missing is None else np.asarray(missing) & ~leaf,
                "values": np.asarray(value, dtype=np.float64),
                "depth": tree.max_depth,
            }
        )
    return _flatten(trees, trees[0]["values"].shape[1], as_float32=True)


def flatten_boosting(model: Any) -> FlatForest:
    """A HistGradientBoosting model's predictors; output k sums the trees of class k (raw scores)."""
    outputs = int(model.n_trees_per_iteration_)
    trees = []
    for iteration in model._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise NotCompiled("a boosted model with native categorical splits")
            leaf = nodes["is_leaf"].astype(bool)
            values = np.zeros((len(nodes), outputs))
            values[:, k] = nodes["value"]
            left, right = nodes["left"].astype(np.intp), nodes["right"].astype(np.intp)
            trees.append(
                {
                    "leaf": leaf,
                    "feature": nodes["feature_idx"],
                    "threshold": nodes["num_threshold"],
                    "left": left,
                    "right": right,
                    "missing_left": nodes["missing_go_to_left"].astype(bool) & ~leaf,
                    "values": values,
                    "depth": int(nodes["depth"].max()),
                }
            )
    if not trees:
        raise NotCompiled("a boosted model without trees")
    return _flatten(trees, outputs, as_float32=False)
