"""How many labels the online test needs to decide: the label queue's draw against random sampling.

A replay of a challenger period: the rows both versions answered arrive in chunks (a day's traffic,
say); of each chunk a fixed share is labelled, either drawn at random or as `mlops label-queue`
draws them during a rollout (a random share, the rest with probabilities that grow where the two
versions disagree, weighted by 1/probability in the test: `components.monitoring.sampling`). After
each chunk the always-valid test looks at what it has; the figure is the labels spent when it first
decides (promote or retire), the median over repeated draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.modeling.sequential import OnlineTest, compare
from components.monitoring.sampling import draw, inclusion_probabilities


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
    chunk: int,
    rate: float,
    seed: int,
    random_share: float = 0.25,
) -> tuple[int, str]:
    """Labels spent when the test first decides on rows arriving in chunks of `chunk`, a `rate`
    share of each labelled (as the queue draws them, or at random), and the verdict."""
    rng = np.random.default_rng(seed)
    d, priority = np.asarray(d, dtype="float64"), np.asarray(priority, dtype="float64")
    parts: list[np.ndarray] = []
    spent = 0
    for start in range(0, len(d), chunk):
        rows = np.arange(start, min(start + chunk, len(d)))
        k = max(1, round(rate * len(rows)))
        if not queue:
            parts.append(d[rng.choice(rows, size=min(k, len(rows)), replace=False)])
            spent += min(k, len(rows))
        else:
            drawn = rng.choice(rows, size=round(k * random_share), replace=False)
            rest = np.setdiff1d(rows, drawn)
            pi = inclusion_probabilities(priority[rest], k - len(drawn))
            picked = draw(pi, seed, str(start))
            terms = np.zeros(len(rest))
            terms[picked] = d[rest[picked]] / pi[picked]
            parts += [d[drawn], terms]
            spent += len(drawn) + int(picked.sum())
        comparison = compare(np.concatenate(parts), test, labels=spent if queue else None)
        if comparison.verdict != "continue":
            return spent, comparison.verdict
    return spent, "continue"


def budgets(
    d: np.ndarray, priority: np.ndarray, test: OnlineTest, *, chunk: int = 500, rate: float = 0.1, draws: int = 20
) -> list[Budget]:
    """The queue's and random sampling's labels to decide, side by side over the same `draws` seeds."""
    out = []
    for queue in (True, False):
        runs = [
            labels_to_decide(d, priority, test, queue=queue, chunk=chunk, rate=rate, seed=seed) for seed in range(draws)
        ]
        decided = [labels for labels, verdict in runs if verdict != "continue"]
        verdicts: dict[str, int] = {}
        for _, verdict in runs:
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        median = float(np.median([labels if v != "continue" else np.inf for labels, v in runs]))
        out.append(
            Budget(
                "queue" if queue else "random", median if np.isfinite(median) else None, len(decided), verdicts, draws
            )
        )
    return out
