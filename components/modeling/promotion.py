"""The promotion gate: a pure decision over measured evidence, applied to the registry elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from components.modeling.evaluate import higher_is_better


@dataclass(frozen=True)
class PromotionPolicy:
    """Thresholds of the gate (see `PromotionConfig` for what each one means)."""

    metric: str
    min_score: float | None
    floors: Mapping[str, float] = field(default_factory=dict)
    min_improvement: float = 0.0
    min_relative_improvement: float = 0.0
    confidence: float = 0.95
    min_test_rows: int = 1
    slice_tolerance: float = 0.02
    max_train_gap: float | None = None
    require_beats_dummy: bool = True
    latency_budget_ms: float | None = None

    @classmethod
    def from_config(cls, config: Any, **resolved: Any) -> PromotionPolicy:
        """From a `PromotionConfig`, which holds every field of the policy (and bootstrap settings);
        `resolved` replaces fields the task decides (the metric and its floor when not configured)."""
        return cls(**{f.name: resolved.get(f.name, getattr(config, f.name)) for f in fields(cls)})


@dataclass(frozen=True)
class Interval:
    """A paired bootstrap interval of candidate minus champion, oriented so that positive is better."""

    mean: float
    low: float
    high: float
    confidence: float
    samples: int
    rows: int


@dataclass(frozen=True)
class ServingCheck:
    """The candidate loaded through the serving path and asked for its input example."""

    loaded: bool
    latency_ms: float | None
    detail: str = ""
    inference: str | None = None  # compiled | pipeline: the path the service will answer through


@dataclass(frozen=True)
class Evidence:
    """Everything measured for one decision, on the same held-out rows of the current data."""

    rows: int
    candidate: Mapping[str, float]
    champion: Mapping[str, float] | None = None
    champion_version: str | None = None
    dummy: Mapping[str, float] | None = None
    improvement: Interval | None = None
    train_gap: float | None = None
    candidate_slices: Mapping[str, float] = field(default_factory=dict)
    champion_slices: Mapping[str, float] = field(default_factory=dict)
    serving: ServingCheck | None = None


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: not applicable (no champion, nothing configured)
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    candidate_score: float | None
    champion_score: float | None
    checks: tuple[Check, ...] = ()
    awaiting_approval: bool = False  # passed every check; waits for `mlops approve` (set when applied)
    challenger: bool = False  # passed every check; tried against the champion first (set when applied)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.passed is False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _better(metric: str, a: float, b: float) -> float:
    """How much better a is than b (positive = better), whatever the metric's direction."""
    return a - b if higher_is_better(metric) else b - a


def _floor(metric: str, value: float | None, floor: float) -> Check:
    if value is None:
        return Check(f"floor:{metric}", False, f"{metric} could not be computed on the held-out rows")
    ok = value >= floor if higher_is_better(metric) else value <= floor
    relation = (">=" if higher_is_better(metric) else "<=") if ok else ("<" if higher_is_better(metric) else ">")
    return Check(f"floor:{metric}", ok, f"{metric} {value:.4f} {relation} floor {floor:.4f}")


def required_improvement(champion_score: float, policy: PromotionPolicy) -> float:
    return max(policy.min_improvement, policy.min_relative_improvement * abs(champion_score))


def _beats_dummy(evidence: Evidence, policy: PromotionPolicy) -> Check:
    metric = policy.metric
    score = evidence.candidate.get(metric)
    dummy = (evidence.dummy or {}).get(metric)
    if not policy.require_beats_dummy:
        return Check("beats_dummy", None, "not required")
    if score is None or dummy is None:
        return Check("beats_dummy", False, "no dummy baseline score to compare with")
    gain = _better(metric, score, dummy)
    return Check("beats_dummy", gain > 0, f"{metric} {score:.4f} vs dummy baseline {dummy:.4f}")


def _train_gap(evidence: Evidence, policy: PromotionPolicy) -> Check:
    if policy.max_train_gap is None or evidence.train_gap is None:
        gap = "not measured" if evidence.train_gap is None else f"{evidence.train_gap:.4f}"
        return Check("train_gap", None, f"train - validation gap {gap}; no limit configured")
    ok = evidence.train_gap <= policy.max_train_gap
    return Check("train_gap", ok, f"train - validation gap {evidence.train_gap:.4f} (limit {policy.max_train_gap})")


def _beats_champion(evidence: Evidence, policy: PromotionPolicy) -> Check:
    metric = policy.metric
    score = evidence.candidate.get(metric)
    champion = (evidence.champion or {}).get(metric)
    if evidence.champion is None:
        return Check("beats_champion", None, "no champion yet")
    if score is None or champion is None:
        return Check("beats_champion", False, "the champion could not be scored on the same rows")
    need = required_improvement(champion, policy)
    interval = evidence.improvement
    if interval is None:
        gain = _better(metric, score, champion)
        return Check(
            "beats_champion",
            gain > need,
            f"{metric} {score:.4f} vs champion {champion:.4f}: gain {gain:+.4f}, required > {need:.4f}",
        )
    return Check(
        "beats_champion",
        interval.low > need,
        f"{metric} {score:.4f} vs champion {champion:.4f} on the same rows: gain {interval.mean:+.4f}, "
        f"{interval.confidence:.0%} interval [{interval.low:+.4f}, {interval.high:+.4f}]; "
        f"the lower bound must exceed {need:.4f}",
    )


def _slices(evidence: Evidence, policy: PromotionPolicy) -> Check:
    regressions = []
    compared = 0
    for name, value in sorted(evidence.candidate_slices.items()):
        before = evidence.champion_slices.get(name)
        if before is None:
            continue
        compared += 1
        loss = -_better(policy.metric, value, before)
        if loss > policy.slice_tolerance:
            regressions.append(f"{name}: {before:.4f} -> {value:.4f}")
    if not compared:
        return Check("slices", None, "no slice to compare with a champion")
    detail = "; ".join(regressions) if regressions else f"{compared} slice(s) within {policy.slice_tolerance}"
    return Check("slices", not regressions, detail)


def _serving(evidence: Evidence, policy: PromotionPolicy) -> Check:
    serving = evidence.serving
    if serving is None:
        return Check("serving", None, "not checked")
    if not serving.loaded or serving.latency_ms is None:
        return Check("serving", False, f"could not be loaded and queried as the service does: {serving.detail}")
    budget = policy.latency_budget_ms
    ok = budget is None or serving.latency_ms <= budget
    path = f" through the {serving.inference}" if serving.inference else ""
    return Check("serving", ok, f"answered its input example{path} in {serving.latency_ms:.1f} ms (budget {budget} ms)")


def _checks(evidence: Evidence, policy: PromotionPolicy) -> list[Check]:
    metric = policy.metric
    score = evidence.candidate.get(metric)
    checks = [
        Check(
            "held_out_rows",
            evidence.rows >= policy.min_test_rows,
            f"{evidence.rows} held-out rows (minimum {policy.min_test_rows})",
        ),
        _floor(metric, score, policy.min_score)
        if policy.min_score is not None
        else Check(f"floor:{metric}", None, f"no floor on {metric} configured (promotion.min_score)"),
    ]
    checks += [_floor(name, evidence.candidate.get(name), floor) for name, floor in sorted(policy.floors.items())]
    return [
        *checks,
        _beats_dummy(evidence, policy),
        _train_gap(evidence, policy),
        _beats_champion(evidence, policy),
        _slices(evidence, policy),
        _serving(evidence, policy),
    ]


def decide_promotion(evidence: Evidence, policy: PromotionPolicy) -> Decision:
    """Promote only when every applicable check passes.

    The champion and the candidate are compared on the same held-out rows. With an
    improvement interval, its lower bound must clear the required gain, so a tie or a
    gain within the noise keeps the champion and retraining on the same data never churns it.
    """
    checks = tuple(_checks(evidence, policy))
    failed = [c for c in checks if c.passed is False]
    metric = policy.metric
    score = evidence.candidate.get(metric)
    champion = (evidence.champion or {}).get(metric)
    if failed:
        reason = "; ".join(f"{c.name}: {c.detail}" for c in failed)
    elif evidence.champion is None:
        reason = f"no champion yet and {metric} {score:.4f} clears every check"
    else:
        reason = f"{metric} {score:.4f} beats the champion's {champion:.4f} on the same rows; every check passed"
    return Decision(not failed, reason, metric, score, champion, checks)
