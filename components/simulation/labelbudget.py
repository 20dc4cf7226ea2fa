"""How many labels the online test needs to decide: the label queue's draw against random sampling.

A replay of a challenger period: the rows both versions answered wait for labels (a backlog), and
labels come in rounds of 50, either drawn at random or as `mlops label-queue` draws them during a
rollout (a random quarter, the rest with probabilities that grow with the expected gap between the
two versions' losses, weighted by 1/probability in the test: `components.monitoring.sampling`).
After each round the always-valid test looks at what it has; the figure is the labels spent when it
first decides (promote or retire), the median over repeated draws ("undecided" when fewer than half
decided before every row was labelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.modeling.sequential import OnlineTest, compare
from components.monitoring.sampling import draw, importance_terms, inclusion_probabilities


@dataclass(frozen=True)
class Budget:
    """Labels to decide for one strategy, over `draws` repeated draws."""

    strategy: str  # queue | random
    median_labels: float | None  # None when fewer than half the draws decided
    decided: int  # draws that decided within the rows
    verdicts: dict[str, int]  # promote / retire / continue counts
    draws: int

    def text(self) -> str:
        shown = f"{self.median_labels:,.0f} labels" if self.median_labels is not None else "undecided"
        verdicts = ", ".join(f"{v} {k}" for k, v in sorted(self.verdicts.items()))
        return f"{self.strategy} {shown} ({verdicts})"


def labels_to_decide(
    d: np.ndarray,
    priority: np.ndarray,
    test: OnlineTest,
    *,
    queue: bool,
    step: int = 50,
    seed: int = 0,
    random_share: float = 0.25,
) -> tuple[int, str]:
    """Labels spent when the test first decides, and the verdict: rounds of `step` labels from the
    rows not labelled yet (a backlog: every round considers them all, as each `mlops label-queue`
    does), drawn as the queue draws them or at random, the test looking after each round."""
    rng = np.random.default_rng(seed)
    d, priority = np.asarray(d, dtype="float64"), np.asarray(priority, dtype="float64")
    pool = np.ones(len(d), dtype=bool)
    parts: list[np.ndarray] = []
    spent, rounds = 0, 0
    while pool.any():
        left = np.flatnonzero(pool)
        k = min(step, len(left))
        drawn = rng.choice(left, size=round(k * random_share) if queue else k, replace=False)
        pool[drawn] = False
        parts.append(d[drawn])
        spent += len(drawn)
        if queue and k > len(drawn):
            rest = np.flatnonzero(pool)
            pi = inclusion_probabilities(priority[rest], k - len(drawn))
            picked = draw(pi, seed, f"round-{rounds}")
            parts.append(importance_terms(d[rest[picked]], pi, picked))
            pool[rest[picked]] = False
            spent += int(picked.sum())
        rounds += 1
        comparison = compare(np.concatenate(parts), test)
        if comparison.verdict != "continue":
            return spent, comparison.verdict
    return spent, "continue"


def budgets(d: np.ndarray, priority: np.ndarray, test: OnlineTest, *, step: int = 50, draws: int = 20) -> list[Budget]:
    """The queue's and random sampling's labels to decide, side by side over the same `draws` seeds."""
    out = []
    for queue in (True, False):
        runs = [labels_to_decide(d, priority, test, queue=queue, step=step, seed=seed) for seed in range(draws)]
        decided = [labels for labels, verdict in runs if verdict != "continue"]
        verdicts: dict[str, int] = {}
        for _, verdict in runs:
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        median = float(np.median([labels if v != "continue" else np.inf for labels, v in runs]))
        shown = median if np.isfinite(median) else None
        out.append(Budget("queue" if queue else "random", shown, len(decided), verdicts, draws))
    return out
