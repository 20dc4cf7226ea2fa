"""An online comparison of two models that stays valid however often it is looked at.

Champion and challenger answer the same requests; once labels arrive, each request gives one paired
difference d = loss(champion) - loss(challenger) (log loss for classifiers, squared error for
regressors): positive where the challenger did better. A fixed-sample test on the running mean of d
would be wrong here: monitoring looks again at every window and stops at the first "significant"
one, which inflates false promotions far past the nominal level.

The mixture sequential probability ratio test (mSPRT, Johari, Pekelis and Walsh 2017: "Always valid
inference", as online experimentation platforms run it) avoids that. With a normal mixture of
variance tau^2 over the effect, after n differences of mean m and variance s^2 its ratio against
"no difference" is

    L_n = sqrt(s^2 / (s^2 + n tau^2)) * exp(n^2 tau^2 m^2 / (2 s^2 (s^2 + n tau^2)))

and P(L_n ever reaches 1/alpha | no difference) <= alpha, whenever it is looked at. Inverting it
gives an always-valid confidence sequence for the mean difference: m +/- r_n with

    r_n = sqrt(2 s^2 (s^2 + n tau^2) / (n^2 tau^2) * log(sqrt((s^2 + n tau^2) / s^2) / alpha)).

The decision: below `min_rows` paired labels, keep collecting; then promote when the whole sequence
lies above zero (the challenger is better), retire when it lies below (worse), and retire when
`max_rows` pass without either (no difference worth a switch). tau is set as a share of s (the
standardized effect the test is most sensitive to), so it means the same for every loss's scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

Verdict = Literal["promote", "retire", "continue"]


@dataclass(frozen=True)
class OnlineTest:
    """The test's settings: error rate, sample bounds and mixture width (a share of the spread)."""

    alpha: float = 0.05
    min_rows: int = 200
    max_rows: int = 20_000
    mixture: float = 0.1

    @classmethod
    def of(cls, config: Any) -> OnlineTest:
        """The settings of `promotion.online` (`OnlineTestConfig`)."""
        return cls(alpha=config.alpha, min_rows=config.min_rows, max_rows=config.max_rows, mixture=config.mixture)


@dataclass(frozen=True)
class Comparison:
    """Where the comparison stands after `rows` paired labels."""

    verdict: Verdict
    reason: str
    rows: int
    mean_difference: float  # loss(champion) - loss(challenger): > 0 where the challenger is better
    low: float  # the always-valid confidence sequence at this point
    high: float
    likelihood_ratio: float
    alpha: float = 0.05

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def figures(
        self,
        sides: str = "champion - challenger",
        measured: str = "mean loss difference",
        counted: str = "paired labels",
    ) -> str:
        """The difference and its interval in words; `sides` names what is subtracted from what."""
        return (
            f"{measured} {self.mean_difference:+.4f} ({sides}), always-valid {1 - self.alpha:.0%} "
            f"interval [{self.low:+.4f}, {self.high:+.4f}] after {self.rows:,} {counted}"
        )


def paired_losses(task: str, truth: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> np.ndarray:
    """loss(champion) - loss(challenger) per row. Classifiers: `truth` holds class indices and the
    answers are probability rows (log loss); regressors: numbers (squared error)."""
    if task == "regression":
        truth = np.asarray(truth, dtype="float64")
        return (np.asarray(champion, "float64") - truth) ** 2 - (np.asarray(challenger, "float64") - truth) ** 2
    rows = np.arange(len(truth))
    index = np.asarray(truth, dtype="int64")
    eps = 1e-15
    p_champion = np.clip(np.asarray(champion, "float64")[rows, index], eps, 1.0)
    p_challenger = np.clip(np.asarray(challenger, "float64")[rows, index], eps, 1.0)
    return -np.log(p_champion) + np.log(p_challenger)


def radius(n: int, variance: float, test: OnlineTest) -> float:
    """The confidence sequence's half-width after `n` differences of this variance."""
    tau2 = (test.mixture**2) * variance
    spread = variance + n * tau2
    return math.sqrt(2 * variance * spread / (n * n * tau2) * math.log(math.sqrt(spread / variance) / test.alpha))


def likelihood_ratio(n: int, mean: float, variance: float, test: OnlineTest) -> float:
    """The mSPRT ratio against "no difference" (capped so it stays a finite number)."""
    tau2 = (test.mixture**2) * variance
    spread = variance + n * tau2
    exponent = min(n * n * tau2 * mean * mean / (2 * variance * spread), 700.0)
    return math.sqrt(variance / spread) * math.exp(exponent)


def compare(differences: np.ndarray, test: OnlineTest) -> Comparison:
    """The decision on these paired differences (in the order the labels arrived)."""
    d = np.asarray(differences, dtype="float64")
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return Comparison(
            "continue",
            f"{n} paired label(s); the test needs {test.min_rows}",
            n,
            0.0,
            -math.inf,
            math.inf,
            1.0,
            test.alpha,
        )
    mean, variance = float(d.mean()), float(d.var(ddof=1))
    if variance <= 0:  # the same answers on every labelled row: no evidence either way
        variance = 1e-12
    half = radius(n, variance, test)
    found = Comparison("continue", "", n, mean, mean - half, mean + half, likelihood_ratio(n, mean, variance, test))
    found = replace(found, alpha=test.alpha)
    shown = found.figures()
    if n < test.min_rows:
        return replace(found, reason=f"{shown}; the test needs {test.min_rows:,}")
    if found.low > 0:
        return replace(found, verdict="promote", reason=f"the challenger is better: {shown}")
    if found.high < 0:
        return replace(found, verdict="retire", reason=f"the challenger is worse: {shown}")
    if n >= test.max_rows:
        return replace(found, verdict="retire", reason=f"no difference after {n:,} paired labels (max_rows): {shown}")
    return replace(found, reason=f"undecided: {shown}")
