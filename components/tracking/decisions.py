"""A promotion decision, recorded and applied in the registry.

`record_decision` writes what was decided and on what evidence to the candidate's run (metrics,
`decision.json`, tags), so a run tells its own story. `apply_decision` tags the registered version
and, for a promotion, moves `champion` to it under the registry lock, but only if the champion is
still the one the candidate was judged against: when another run promoted in between, the
candidate is held instead (its evidence no longer holds) and the version and run say why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.core.faults import fault_point
from components.modeling.promotion import Decision, Evidence, PromotionPolicy
from components.tracking import registry

REASON_CHARS = 5000  # MLflow's limit on a tag value


@dataclass(frozen=True)
class Applied:
    """What happened in the registry: the decision as it stands after applying it, and the version
    that was champion before a promotion (now `previous-champion`)."""

    decision: Decision
    outgoing: str | None = None
    raced: bool = False  # another run moved the champion first: the candidate was held


def _check_tags(decision: Decision) -> dict[str, str]:
    verdict = {True: "passed", False: "failed", None: "n/a"}
    return {f"check.{c.name}": f"{verdict[c.passed]}: {c.detail}" for c in decision.checks}


def record_decision(
    run_id: str,
    decision: Decision,
    evidence: Evidence,
    policy: PromotionPolicy,
    policy_settings: dict[str, Any],
    candidate: dict[str, Any],
    champion: registry.ChampionInfo | None,
) -> None:
    """The decision and its evidence on the candidate's run: the gain and the champion's score on
    the same rows as metrics, `decision.json`, and the verdict as tags."""
    metric = policy.metric
    if evidence.champion and metric in evidence.champion:
        registry.log_metrics(run_id, {f"champion_{metric}_same_rows": evidence.champion[metric]})
    if evidence.improvement is not None:
        gain = evidence.improvement
        registry.log_metrics(
            run_id, {f"gain_{metric}": gain.mean, f"gain_{metric}_low": gain.low, f"gain_{metric}_high": gain.high}
        )
    if evidence.serving is not None and evidence.serving.latency_ms is not None:
        registry.log_metrics(run_id, {"serving_check_latency_ms": evidence.serving.latency_ms})
        if evidence.serving.inference:
            registry.set_tags(run_id, {"serving_check_inference": evidence.serving.inference})
    record = {
        "decision": decision.as_dict(),
        "evidence": asdict(evidence),
        "policy": {**policy_settings, "metric": metric, "min_score": policy.min_score},
        "candidate": candidate,
        "champion": {"version": champion.version, "run_id": champion.run_id} if champion else None,
    }
    registry.log_dict(run_id, record, "decision.json")
    verdict = "promote" if decision.promote else "hold"
    registry.set_tags(run_id, {"decision": verdict, "decision.reason": decision.reason[:REASON_CHARS]})


def apply_decision(
    client: Any,
    model_name: str,
    version: str,
    decision: Decision,
    *,
    run_id: str,
    expected_champion: str | None,
    lock_dir: Path,
) -> Applied:
    """Tag the version with the decision and, for a promotion, move `champion` to it if the champion
    is still `expected_champion`; otherwise hold it and say why."""
    verdict = "promote" if decision.promote else "hold"
    registry.tag_version(
        client,
        model_name,
        version,
        {"decision": verdict, "decision.reason": decision.reason, "promoted": str(decision.promote).lower()}
        | _check_tags(decision),
    )
    if not decision.promote:
        return Applied(decision)
    try:
        outgoing = registry.set_champion(
            client,
            model_name,
            version,
            {"promoted_at": datetime.now(UTC).isoformat()},
            expected=expected_champion,
            lock_dir=lock_dir,
        )
        fault_point("promoted")
    except registry.ChampionMoved as exc:
        reason = str(exc)[:REASON_CHARS]
        registry.tag_version(
            client, model_name, version, {"decision": "hold", "decision.reason": reason, "promoted": "false"}
        )
        registry.set_tags(run_id, {"decision": "hold", "decision.reason": reason})
        return Applied(replace(decision, promote=False, reason=str(exc)), raced=True)
    return Applied(decision, outgoing=outgoing)
