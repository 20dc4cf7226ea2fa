"""The promotion gate: a pure decision, applied to the registry elsewhere."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from components.evaluate import higher_is_better


@dataclass(frozen=True)
class PromotionPolicy:
    metric: str
    min_score: float


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    candidate_score: float | None
    champion_score: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(candidate: float | None, champion: float | None, policy: PromotionPolicy) -> Decision:
    """Promote when the candidate clears the absolute threshold and strictly beats the champion.

    `champion` is the current champion's score on the same held-out rows, or None when there
    is no champion; a tie keeps the champion, so retraining on identical data never churns it.
    """
    metric = policy.metric
    better = higher_is_better(metric)

    def decide(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, metric, candidate, champion)

    if candidate is None:
        return decide(False, f"{metric} could not be computed on the held-out rows")
    passes = candidate >= policy.min_score if better else candidate <= policy.min_score
    if not passes:
        relation = "below" if better else "above"
        return decide(False, f"{metric} {candidate:.4f} is {relation} the threshold {policy.min_score:.4f}")
    if champion is None:
        return decide(True, f"no champion yet and {metric} {candidate:.4f} clears the threshold {policy.min_score:.4f}")
    improves = candidate > champion if better else candidate < champion
    if not improves:
        return decide(False, f"{metric} {candidate:.4f} does not beat the champion's {champion:.4f} on the same rows")
    return decide(True, f"{metric} {candidate:.4f} beats the champion's {champion:.4f} on the same rows")
