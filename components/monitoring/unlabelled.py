"""A challenger period decided before labels arrive, when the policy allows it
(`promotion.online.without_labels: estimated`).

Labels often come weeks after the requests. Each version's *expected* loss on a request can be read
without them, from what was measured on labelled rows at training time:

- a classifier's expected log loss is the entropy of its own probabilities, -sum_k p_k log p_k: where
  its probabilities are calibrated (a row given p_k is of class k with probability p_k), that is the
  mean log loss it will show once the labels come (CBPE, `monitor.estimate`);
- a regressor's expected squared error is predicted by a model of its errors on rows it was not
  fitted on (DLE, `monitor.loss`), stored with the version at training.

The paired difference of the two expected losses per request, d = E loss(champion) - E loss(challenger),
goes through the same always-valid test as the labelled differences, so looking at every window
does not inflate the error rate. What that test cannot see is the estimate's own bias: a
classifier's entropy is the classifier grading itself, and an overconfident one would always win.
So the estimate decides only

- when both classifiers' held-out calibration error is at most `max_calibration_error` beyond what
  a calibrated model shows by chance on as many rows (`evaluate.calibration_noise`; a regressor
  needs its stored errors),
- past at least `min_rows` requests both versions answered, and
- when the whole interval lies above a margin of `estimated_margin` times the champion's expected loss.

Only a promotion is decided so, never a retirement: a promotion can be undone when the labels
come (below), a retired challenger's shadow is gone. A challenger estimated worse waits for labels.

It still holds only under covariate shift: a change in the concept itself is invisible without
labels. A promotion decided so is therefore re-checked: the outgoing champion stays in shadow
(`decisions.start_recheck`) and the labelled test, on every request since the first challenger
period began, rolls the promotion back if it proves the old version better.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import OnlineTestConfig
from components.inference.scoring import ModelSchema, coerce_rows
from components.modeling.evaluate import calibration_noise
from components.modeling.sequential import Comparison, OnlineTest, Verdict, compare
from components.modeling.tasks import Task
from components.monitoring.monitor.estimate import expected_log_losses
from components.monitoring.monitor.loss import LossModel

CALIBRATION = "test_calibration_error"
MIN_ERRORS = 20  # stored errors a regressor's loss model needs


@dataclass(frozen=True)
class Grader:
    """What one version's expected loss is read from: the model, its training run's held-out metrics
    and, for a regressor, its stored errors (None when its run has none)."""

    version: str
    model: Any
    metrics: dict[str, float]
    residuals: pd.DataFrame | None = None


def distrust(task: Task, graders: tuple[Grader, Grader], config: OnlineTestConfig) -> str | None:
    """Why these versions' estimates cannot decide (None when they can)."""
    for grader in graders:
        if not task.classification:
            if grader.residuals is None or len(grader.residuals) < MIN_ERRORS:
                return f"v{grader.version} has no stored held-out errors to estimate its loss from (retrain it)"
            continue
        error, rows = grader.metrics.get(CALIBRATION), grader.metrics.get("test_rows")
        if error is None or not np.isfinite(error) or not rows:
            return f"v{grader.version} has no held-out calibration error on record"
        chance = calibration_noise(int(rows))
        if error > config.max_calibration_error + chance:
            return (
                f"v{grader.version}'s held-out calibration error {error:.3f} is above "
                f"promotion.online.max_calibration_error {config.max_calibration_error:g} plus the {chance:.3f} "
                f"a calibrated model may show by chance on {int(rows):,} rows: its probabilities cannot grade it "
                "(model.calibration: sigmoid or isotonic recalibrates a retrained version)"
            )
    return None


def expected_losses(task: Task, grader: Grader, rows: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """The version's expected loss on each row: log loss for a classifier, squared error for a regressor."""
    answers = task.output(grader.model, coerce_rows(rows, ModelSchema.of(grader.model)))
    if task.classification:
        return expected_log_losses(answers)
    if grader.residuals is None:
        raise ValueError(f"v{grader.version} has no stored errors")
    return LossModel.fit(grader.residuals, seed).predict(rows, np.asarray(answers, dtype="float64"))[0]


def expected_differences(
    rows: pd.DataFrame, task: Task, graders: tuple[Grader, Grader], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: E loss(champion) - E loss(challenger), and E loss(champion)."""
    champion = expected_losses(task, graders[0], rows, seed)
    return champion - expected_losses(task, graders[1], rows, seed), champion


def decide(d: np.ndarray, champion: np.ndarray, task: Task, config: OnlineTestConfig) -> Comparison:
    """The always-valid test on the expected differences, against the margin."""
    found = compare(d, OnlineTest.of(config))  # its interval; the verdict is the margin's, below
    margin = config.estimated_margin * float(np.mean(champion)) if len(champion) else 0.0
    verdict: Verdict
    loss = "log loss" if task.classification else "squared error"
    measured, sides = f"expected {loss} difference", "champion - challenger, without labels"
    shown = found.figures(sides, measured, "requests both answered") + f", margin {margin:.4f}"
    if found.rows < config.min_rows:
        verdict, reason = "continue", f"{shown}; the estimate needs {config.min_rows:,} requests"
    elif found.low > margin:
        verdict, reason = "promote", f"the challenger is estimated better: {shown}; labels will re-check it"
    elif found.high < -margin:  # kept in shadow: a retirement could not be re-checked, labels decide it
        verdict, reason = "continue", f"the challenger is estimated worse: {shown}; it is retired on labels only"
    else:
        verdict, reason = "continue", f"undecided without labels: {shown}"
    return replace(found, verdict=verdict, reason=reason)


def estimated_comparison(
    rows: pd.DataFrame,
    task: Task,
    graders: tuple[Grader, Grader],
    config: OnlineTestConfig,
    seed: int = 0,
    labelled: Comparison | None = None,
) -> tuple[Comparison | None, str]:
    """The decision on the expected loss differences over `rows` (the requests both versions answered,
    oldest first; the latest `max_rows` are read), or None and why the estimate cannot decide.
    `labelled`: the labelled test so far, too early to decide; an interval of it below zero already
    says the challenger is worse, and the estimate does not overrule labels."""
    why = distrust(task, graders, config)
    if why is None and labelled is not None and labelled.rows >= 2 and labelled.high < 0:
        why = f"the {labelled.rows:,} label(s) so far say the challenger is worse ({labelled.high:+.4f} at best)"
    if why is not None:
        return None, f"not decided without labels: {why}"
    d, champion = expected_differences(rows.tail(config.max_rows), task, graders, seed)
    return decide(d, champion, task, config), ""
