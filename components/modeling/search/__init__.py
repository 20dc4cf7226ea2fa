"""Hyperparameter search on the training split, scored by stratified cross-validation.

Trials are asked from Optuna in batches and evaluated by a pluggable `evaluate_batch`, so a
flow can run a batch on Dask while this module imports neither Prefect nor Dask. The first
trial is always the project's defaults: the search can only match or beat them. Every
scikit-learn call runs with n_jobs=1, because process pools forked from Prefect's threads
can hang on a lock copied mid-use.

* `studies`: `run_search`, one Optuna study per estimator family, and the final comparison;
* `spaces`: each family's search space and its defaults as a point in it;
* `crossval`: the rows a search scores, its folds, and one parameter set's score;
* `results`: what a trial and a search return;
* `threshold`: a binary classifier's F1-best cut-off on out-of-fold probabilities.
"""

from __future__ import annotations

from components.modeling.search.crossval import (
    cross_validate_params,
    cv_repeats,
    cv_splitter,
    out_of_fold_proba,
    sample_rows,
    search_rows,
)
from components.modeling.search.results import (
    BatchEvaluator,
    ModelFactory,
    Sample,
    SearchError,
    SearchResult,
    TrialResult,
)
from components.modeling.search.spaces import LEAF_SHARE, search_space
from components.modeling.search.studies import run_search
from components.modeling.search.threshold import tune_threshold, tune_threshold_oof

__all__ = [
    "LEAF_SHARE",
    "BatchEvaluator",
    "ModelFactory",
    "Sample",
    "SearchError",
    "SearchResult",
    "TrialResult",
    "cross_validate_params",
    "cv_repeats",
    "cv_splitter",
    "out_of_fold_proba",
    "run_search",
    "sample_rows",
    "search_rows",
    "search_space",
    "tune_threshold",
    "tune_threshold_oof",
]
