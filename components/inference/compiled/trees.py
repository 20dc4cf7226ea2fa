"""Tree ensembles as flat arrays, walked in one loop compiled by Numba.

scikit-learn predicts a forest tree by tree (a Python call, input checks and an allocation each:
~15 µs a tree for one row, 3-10 ms for a 200-tree forest) and a boosted model predictor by
predictor. Here every node of every tree sits in one set of arrays, and one compiled loop walks
every tree for every row and adds up the leaves' values in tree order, as scikit-learn does. The
walk is bound by memory latency, so a node is one 16-byte record and each tree is laid out in
preorder (the left child is the next record): one row of a 200-tree forest of 560,000 nodes whose
paths run 22-36 levels deep visits ~5,400 nodes in 83-86 µs (a NumPy walk, all trees a level at a
time, took 150-170 µs: five array calls a level). Past
`WALK_MAX_ROWS` rows scikit-learn's own loops, which can use every core, answer instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.inference.compiled.errors import NotCompiled

# One node: the threshold, the column tested (~column when a missing value goes left) and the right
# child (0 at a leaf: node 0 is the first tree's root, nobody's child). Nodes are numbered in
# preorder, so the left child is the next record: 16 bytes a node, and a walk that goes left
# reads memory it has just read.
NODE = np.dtype([("threshold", np.float64), ("feature", np.int32), ("right", np.int32)])

# Rows up to which the arrays are walked; above it the estimator's own compiled loops are faster.
WALK_MAX_ROWS = 64


@functools.cache
def _compiled() -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    """The compiled walks, (leaves, total); Numba imports and compiles each on first use (~0.5 s a process)."""
    import numba

    @numba.njit(nogil=True, inline="always")
    def leaf(x, node, threshold, feature, right):
        while right[node] != 0:
            column = feature[node]
            value = x[column if column >= 0 else ~column]
            left = column < 0 if np.isnan(value) else value <= threshold[node]
            node = node + 1 if left else right[node]
        return node

    @numba.njit(nogil=True)
    def leaves(X, roots, threshold, feature, right):
        out = np.empty((X.shape[0], roots.shape[0]), dtype=np.intp)
        for r in range(X.shape[0]):
            for t in range(roots.shape[0]):
                out[r, t] = leaf(X[r], roots[t], threshold, feature, right)
        return out

    @numba.njit(nogil=True)
    def total(X, roots, threshold, feature, right, values):
        out = np.zeros((X.shape[0], values.shape[1]))
        for r in range(X.shape[0]):
            for t in range(roots.shape[0]):  # in tree order, as scikit-learn adds them up
                node = leaf(X[r], roots[t], threshold, feature, right)
                for k in range(values.shape[1]):
                    out[r, k] += values[node, k]
        return out

    return leaves, total


@dataclass(frozen=True)
class FlatForest:
    """Every tree's nodes in one array of `NODE` records, each tree in preorder, one after another.

    From node i a row goes left (to i + 1) when its value is <= the threshold, right otherwise; a
    missing value goes left where the node says so (scikit-learn's `missing_go_to_left`), else
    right, as NaN <= t is false.
    """

    roots: np.ndarray  # (trees,) each tree's root
    nodes: np.ndarray  # (nodes,) NODE records
    values: np.ndarray  # (nodes, outputs) a leaf's contribution to each output (zero elsewhere)
    original: np.ndarray  # (nodes,) each node's index in scikit-learn's trees, laid one after another
    depth: int  # the longest path, root to leaf
    as_float32: bool  # scikit-learn's forests compare float32 inputs

    @property
    def missing_left(self) -> bool:
        """Whether any node sends missing values left (it learnt from rows with missing values)."""
        return bool((self.nodes["feature"] < 0).any())

    def split_points(self, column: int) -> np.ndarray:
        """The distinct thresholds of the nodes that test this column."""
        nodes = self.nodes[self.nodes["right"] != 0]
        tested = np.where(nodes["feature"] < 0, ~nodes["feature"], nodes["feature"])
        return np.unique(nodes["threshold"][tested == column])

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """(rows, trees) the leaf each row reaches in each tree, numbered as in `original`."""
        return self.original[_compiled()[0](*self._arrays(X))]

    def total(self, X: np.ndarray) -> np.ndarray:
        """(rows, outputs) the sum over trees of the reached leaves' values."""
        return _compiled()[1](*self._arrays(X), self.values)

    def _arrays(self, X: np.ndarray) -> tuple[Any, ...]:
        X = np.ascontiguousarray(X.astype(np.float32) if self.as_float32 else X, dtype=np.float64)
        nodes = self.nodes
        return X, self.roots, nodes["threshold"], nodes["feature"], nodes["right"]


def _preorder(left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> np.ndarray:
    """The tree's node indices in preorder (a node, its left subtree, its right subtree): already so for
    depth-first forests and boosted predictors; a best-first forest (max_leaf_nodes) is reordered."""
    internal = np.flatnonzero(~leaf)
    if np.array_equal(left[internal], internal + 1):  # built depth first, left first: already so
        return np.arange(len(leaf), dtype=np.intp)
    order, stack = [], [0]
    while stack:
        node = stack.pop()
        order.append(node)
        if not leaf[node]:
            stack += [int(right[node]), int(left[node])]
    return np.asarray(order, dtype=np.intp)


def _flatten(trees: list[dict[str, np.ndarray]], outputs: int, as_float32: bool) -> FlatForest:
    if sum(len(t["feature"]) for t in trees) >= 2**31:
        raise NotCompiled("a forest of more than 2**31 nodes")
    parts, values, original, roots, depth, offset = [], [], [], [], 0, 0
    for tree in trees:
        leaf = tree["leaf"].astype(bool)
        order = _preorder(tree["left"], tree["right"], leaf)
        position = np.empty(len(order), dtype=np.intp)
        position[order] = np.arange(len(order)) + offset  # old index -> new global index
        nodes = np.zeros(len(order), dtype=NODE)
        inner = ~leaf[order]
        column = tree["feature"][order].astype(np.int32)
        nodes["feature"] = np.where(inner & tree["missing_left"][order].astype(bool), ~column, column) * inner
        nodes["threshold"] = np.where(inner, tree["threshold"][order], np.inf)
        nodes["right"] = np.where(inner, position[np.where(inner, tree["right"][order], 0)], 0)
        parts.append(nodes)
        values.append(np.where(leaf[order][:, None], tree["values"][order], 0.0))
        original.append(order + offset)
        roots.append(offset)
        depth = max(depth, int(tree["depth"]))
        offset += len(order)
    return FlatForest(
        roots=np.asarray(roots, dtype=np.intp),
        nodes=np.concatenate(parts),
        values=np.concatenate(values).reshape(-1, outputs),
        original=np.concatenate(original),
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
