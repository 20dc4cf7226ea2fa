"""A promotion decision, recorded and applied in the registry.

`record_decision` writes what was decided and on what evidence to the candidate's run (metrics,
`decision.json`, tags), so a run tells its own story. `apply_decision` tags the registered version
and, for a promotion, moves `champion` to it under the registry lock, but only if the champion is
still the one the candidate was judged against: when another run promoted in between, the
candidate is held instead (its evidence no longer holds) and the version and run say why.

With `promotion.approval: manual`, a candidate that passes stops at "ready" (`approval: pending`
on the version); `approve` finishes it (if the champion it was judged against still serves) and
`reject` ends it. Both record who, when and why on the version and in the model's trail.
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
    pending: bool = False  # passed, and waits for `mlops approve` (promotion.approval: manual)
    challenger: bool = False  # passed, and is tried against the champion first (promotion.rollout)


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
    approval: str = "auto",
    via: str = "mlops run",
    rollout: tuple[str, float] = ("direct", 0.0),
) -> Applied:
    """Tag the version with the decision and, for a promotion, move `champion` to it if the champion
    is still `expected_champion` (otherwise hold it and say why), or, under manual approval, mark
    it ready. With a `rollout` (mode, canary share) other than direct and a champion serving, the
    version becomes the challenger instead: approval, if manual, comes after its online test."""
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
    audit = registry.Audit(decision.reason, via, evidence=f"runs:/{run_id}/decision.json")
    challenge = rollout[0] != "direct" and expected_champion is not None
    if approval == "manual" and not challenge:
        registry.tag_version(
            client, model_name, version, {"approval": "pending", "approval.champion": expected_champion or ""}
        )
        registry.note_move(client, model_name, "ready", version, audit, lock_dir)
        return Applied(decision, pending=True)
    try:
        if challenge:
            _challenge(client, model_name, version, audit, str(expected_champion), lock_dir, rollout)
            return Applied(decision, challenger=True)
        outgoing = registry.set_champion(
            client,
            model_name,
            version,
            {"promoted_at": datetime.now(UTC).isoformat()},
            expected=expected_champion,
            lock_dir=lock_dir,
            audit=audit,
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


def _challenge(
    client: Any,
    name: str,
    version: str,
    audit: registry.Audit,
    expected: str,
    lock_dir: Path,
    rollout: tuple[str, float],
) -> None:
    """Make the version the challenger of `expected` (`ChampionMoved` if the champion moved)."""
    mode, share = rollout
    tags = {
        "rollout": mode,
        "challenger_since": datetime.now(UTC).isoformat(timespec="seconds"),
        "challenger_of": expected,
    } | ({"canary_share": str(share)} if mode == "canary" else {})
    registry.set_challenger(client, name, version, tags, expected_champion=expected, audit=audit, lock_dir=lock_dir)


class NotPending(registry.RegistryError):
    """The version is not waiting for approval."""


def _pending(client: Any, name: str, version: str) -> dict[str, str]:
    """The tags of a version waiting for approval, or `NotPending` saying what it is instead."""
    from mlflow.exceptions import MlflowException

    try:
        tags = dict(client.get_model_version(name, version).tags or {})
    except MlflowException as exc:
        raise registry.RegistryError(f"{name} has no version {version}: {exc.message}") from None
    state = tags.get("approval")
    if state != "pending":
        what = f"its approval is {state!r}" if state else "it was not held for approval"
        raise NotPending(f"{name} v{version} is not waiting for approval: {what}")
    return tags


def approve(client: Any, name: str, version: str, reason: str, *, by: str, lock_dir: Path) -> str | None:
    """Promote a version waiting for approval, if the champion it was judged against still serves;
    returns the outgoing champion. A stale approval (`ChampionMoved`) is marked and raised."""
    tags = _pending(client, name, version)
    expected = tags.get("approval.champion") or None
    at = datetime.now(UTC).isoformat(timespec="seconds")
    run_id = client.get_model_version(name, version).run_id
    evidence = f"runs:/{run_id}/decision.json" if run_id else None
    audit = registry.Audit(reason, "mlops approve", evidence, by, action="approved")
    note = {"approved_by": by, "approved_at": at, "approval.reason": reason}
    try:
        outgoing = registry.set_champion(
            client, name, version, {"promoted_at": at} | note, expected=expected, lock_dir=lock_dir, audit=audit
        )
    except registry.ChampionMoved as exc:
        registry.tag_version(client, name, version, {"approval": "stale", "decision.reason": str(exc)})
        raise
    registry.tag_version(client, name, version, {"approval": "approved", "promoted": "true", "decision": "promote"})
    if tags.get(DECIDED_ON) == "estimated" and outgoing is not None:  # the evidence was an estimate: labels re-check it
        start_recheck(client, name, version, outgoing, tags.get("challenger_since"), lock_dir=lock_dir)
    return outgoing


DECIDED_ON = "decided_on"  # version tag: what a challenger's online verdict rested on, labels or estimated


def start_recheck(
    client: Any, name: str, promoted: str, outgoing: str, since: str | None, *, lock_dir: Path
) -> str | None:
    """Keep the outgoing champion in shadow after a promotion decided without labels, so the labelled
    test re-checks it on every request since `since` (the first challenger period's start) and rolls
    the promotion back if the old version proves better. Returns the challenger it replaced."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {"rollout": "shadow", "challenger_since": since or at, registry.RECHECK_OF: promoted}
    why = f"re-check on labels of v{promoted}, promoted on estimated performance"
    audit = registry.Audit(why, "mlops monitor (online test)")
    return registry.set_challenger(
        client, name, outgoing, tags, expected_champion=promoted, audit=audit, lock_dir=lock_dir
    )


def reject(client: Any, name: str, version: str, reason: str, *, by: str, lock_dir: Path) -> None:
    """End a version's wait for approval; recorded on the version and in the trail."""
    _pending(client, name, version)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    registry.tag_version(
        client, name, version, {"approval": "rejected", "rejected_by": by, "rejected_at": at, "approval.reason": reason}
    )
    audit = registry.Audit(reason, "mlops reject", by=by)
    trial = registry.get_challenger(client, name)
    if trial is not None and trial.version == version:  # a challenger ready after its online test
        registry.end_challenger(client, name, version, audit, tags={"challenger.ended": "rejected"}, lock_dir=lock_dir)
        return
    registry.note_move(client, name, "rejected", version, audit, lock_dir)
