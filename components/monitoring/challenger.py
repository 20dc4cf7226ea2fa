"""The end of a challenger period: champion and challenger on the same labelled requests.

The service logged both versions' answers on each request of the rollout (one served, the other in
the `_shadow_*` columns). Once labels arrive (the label files monitoring reads, without the rows the
label queue picked for being uncertain outside a rollout: those are not a sample of the traffic),
each request the two versions both answered gives one paired loss difference, computed from the two
registered models' full answers to the logged inputs (log loss for classifiers, squared error for
regressors). Labels of rows the queue drew during the rollout with recorded probabilities count
weighted by them (`components.monitoring.sampling`). `sequential.compare` decides on them: promote,
retire or keep collecting, valid however often monitoring looks (an always-valid test, see
`components.modeling.sequential`).

With `promotion.online.without_labels: estimated`, a look the labels have not decided also reads each
version's expected loss (`components.monitoring.unlabelled`); a promotion decided so keeps the
outgoing champion in shadow (`recheck_of`), and the labelled test on it later confirms the
promotion or rolls it back.

`settle` applies the verdict in the registry: a promotion moves `champion` (or, under
`promotion.approval: manual`, marks the challenger ready for `mlops approve`), a retirement removes
the `challenger` alias; both are recorded in the model's trail with the evidence file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import OnlineTestConfig
from components.core.files import write_text_atomic
from components.inference.predlog import (
    LOGGED_AT,
    MODEL_VERSION,
    SHADOW_PREDICTION,
    SHADOW_VERSION,
    read_prediction_log,
)
from components.inference.scoring import ModelSchema, coerce_rows
from components.modeling.sequential import Comparison, OnlineTest, compare, paired_losses
from components.modeling.tasks import Task, labeled_target
from components.monitoring import sampling, unlabelled
from components.monitoring.labelqueue import id_text
from components.monitoring.monitor.decay import SELECTION, WEIGHTED
from components.tracking import registry
from components.tracking.decisions import DECIDED_ON, start_recheck


@dataclass(frozen=True)
class Trial:
    """Where a challenger period stands after one look."""

    model_name: str
    champion: str
    challenger: str
    rollout: str
    verdict: str  # promote | retire | continue | waiting (for approval)
    reason: str
    paired_rows: int  # requests both answered
    labelled_rows: int  # ... of which labels arrived
    comparison: dict[str, Any] | None = None
    action: str = "none"  # promoted | ready | retired | rolled_back | confirmed | none: what `settle` did
    evidence: str | None = None
    decided_on: str = "labels"  # labels | estimated (promotion.online.without_labels)
    recheck_of: str | None = None  # the champion promoted without labels that this trial re-checks
    since: str | None = None  # when the challenger period began

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_rows(log: pd.DataFrame, champion: str, challenger: str) -> pd.DataFrame:
    """The log rows both versions answered (one served, the other scored beside it), oldest first."""
    if SHADOW_VERSION not in log.columns or not len(log):
        return log.iloc[0:0]
    served, shadow = log[MODEL_VERSION].astype(str), log[SHADOW_VERSION].astype(str)
    both = ((served == champion) & (shadow == challenger)) | ((served == challenger) & (shadow == champion))
    both &= log[SHADOW_PREDICTION].notna()
    return log[both].sort_values(LOGGED_AT, kind="stable")


def _truth(labels: pd.Series, classes: list[Any]) -> np.ndarray:
    """Each label's index among `classes` (-1 where it is none of them)."""
    index = {str(c): i for i, c in enumerate(classes)}
    return np.asarray([index.get(str(v), -1) for v in labeled_target(labels)], dtype="int64")


def differences(
    rows: pd.DataFrame, labels: pd.Series, task: Task, champion: Any, challenger: Any
) -> tuple[np.ndarray, str]:
    """loss(champion) - loss(challenger) per labelled row, and a note on rows left out."""
    first = task.output(champion, coerce_rows(rows, ModelSchema.of(champion)))
    second = task.output(challenger, coerce_rows(rows, ModelSchema.of(challenger)))
    if not task.classification:
        truth = pd.to_numeric(labels, errors="coerce").to_numpy(dtype="float64")
        return paired_losses("regression", truth, first, second), ""
    classes = [str(c) for c in champion.classes_]
    theirs = [str(c) for c in challenger.classes_]
    if sorted(classes) != sorted(theirs):
        raise ValueError(f"champion and challenger know different classes: {classes} and {theirs}")
    second = second[:, [theirs.index(c) for c in classes]]
    truth = _truth(labels, list(champion.classes_))
    known = truth >= 0
    note = f"; {int((~known).sum())} label(s) of classes neither model knows left out" if not known.all() else ""
    out = np.full(len(truth), np.nan)  # NaN where the label is of no known class: `compare` drops it
    out[known] = paired_losses(task.name, truth[known], first[known], second[known])
    return out, note


def _labelled(rows: pd.DataFrame, labels: pd.DataFrame, keys: tuple[str, str]) -> tuple[pd.DataFrame, str]:
    """`rows` joined with their labels, and the name of the label column in the result."""
    id_column, target = keys
    joined = rows.merge(labels[[id_column, target]], on=id_column, how="inner", suffixes=("", "_label"))
    return joined, f"{target}_label" if f"{target}_label" in joined.columns else target


def _weighted(
    rows: pd.DataFrame, picks: pd.DataFrame, direct: pd.DataFrame, keys: tuple[str, str], score: Any, designs: Path
) -> sampling.Weighted:
    """The weighted terms (one per labelled pick) of the label-queue draws whose picks came back labelled."""
    id_column = keys[0]
    joined, column = _labelled(rows, picks, keys)
    d = score(joined, joined[column]) if len(joined) else np.zeros(0)
    ids = id_text(joined[id_column]) if len(joined) else pd.Series(dtype=str)
    found = {i: float(v) for i, v in zip(ids, d, strict=True) if np.isfinite(v)}
    eligible = set(id_text(rows[id_column])) - set(id_text(direct[id_column]))
    since = pd.Timestamp(rows[LOGGED_AT].min()).to_pydatetime()  # older draws hold none of these rows
    return sampling.weighted_terms(sampling.read_designs(designs, since), found, eligible)


def judge(
    log: pd.DataFrame,
    labels: pd.DataFrame | None,
    versions: tuple[str, str],
    models: tuple[Any, Any],
    task: Task,
    keys: tuple[str | None, str],
    test: OnlineTestConfig,
    designs: Path | None = None,
) -> tuple[Comparison | None, int, int, str]:
    """The online test on the labelled requests both `versions` (champion, challenger) answered.
    `keys`: the id column labels join on, and the target; `designs`: the label queue's folder, whose
    draws' labels (`_selection` "weighted") count through their inclusion probabilities. Returns the
    comparison (None without labels), the paired rows, the labels used and a note."""
    (champion, challenger), (id_column, target) = versions, keys
    rows = paired_rows(log, champion, challenger)
    if not len(rows):
        return None, 0, 0, NOT_PAIRED
    if labels is None:
        return None, len(rows), 0, "no labels for the requests both versions answered yet"
    if id_column is None or id_column not in rows.columns:
        return None, len(rows), 0, "labels join the prediction log on data.id_column: set it and send it"
    rows = rows.drop_duplicates(subset=[id_column], keep="first")
    known = labels.dropna(subset=[target]).drop_duplicates(subset=[id_column], keep="last")
    drawn = known[SELECTION] == WEIGHTED if SELECTION in known.columns else pd.Series(False, index=known.index)
    direct, picks = known[~drawn], known[drawn]
    joined, column = _labelled(rows, direct, (id_column, target))
    diffs, note = differences(joined, joined[column], task, *models) if len(joined) else (np.zeros(0), "")
    if len(picks) and designs is not None:
        score = lambda frame, truth: differences(frame, truth, task, *models)[0]  # noqa: E731
        weighted = _weighted(rows, picks, joined, (id_column, target), score, designs)
        diffs = np.concatenate([diffs, weighted.terms])
        note += weighted.note()
        if not weighted.draws and not weighted.waiting:
            note += f"; {len(picks):,} label(s) of label-queue draws left out: no design file of theirs in {designs}"
    if not len(diffs):
        return None, len(rows), 0, "no labels for the requests both versions answered yet" + note
    return compare(diffs, OnlineTest.of(test)), len(rows), int(np.isfinite(diffs).sum()), note


NOT_PAIRED = (
    "no request answered by both yet (the service scores the challenger once it has loaded it and "
    "keeps a prediction log: see its /metadata)"
)


def look(
    workspace_predictions: Path,
    labels: pd.DataFrame | None,
    info: registry.ChallengerInfo,
    champion: tuple[str, Any],
    challenger_model: Any,
    task: Task,
    keys: tuple[str | None, str],
    test: OnlineTestConfig,
    designs: Path | None = None,
    graders: tuple[unlabelled.Grader, unlabelled.Grader] | None = None,
) -> Trial:
    """Read the prediction log since the challenger started and judge it (nothing applied yet).
    `graders` (champion's, challenger's): with `without_labels: estimated`, what their expected losses
    are read from when the labels have not decided yet."""
    since = datetime.fromisoformat(info.since) if info.since else None
    log = read_prediction_log(workspace_predictions, since=since)
    versions = (champion[0], info.version)
    comparison, paired, labelled, note = judge(
        log, labels, versions, (champion[1], challenger_model), task, keys, test, designs
    )
    decided_on = "labels"
    if info.tags.get("approval") == "pending":
        verdict, reason = "waiting", "passed its online test; waiting for approval (mlops approve / mlops reject)"
    elif info.recheck_of is not None:
        verdict, reason = _recheck(comparison, paired, note, versions)
    else:
        verdict, reason = "continue", f"{paired:,} request(s) answered by both; {note}"
        if comparison is not None:
            verdict, reason = comparison.verdict, comparison.reason + note
        if verdict == "continue" and test.without_labels == "estimated" and graders is not None:
            rows = paired_rows(log, *versions)
            estimate, why = unlabelled.estimated_comparison(rows, task, graders, test, labelled=comparison)
            if estimate is not None and estimate.verdict != "continue":
                comparison, verdict, reason, decided_on = estimate, estimate.verdict, estimate.reason, "estimated"
            else:
                reason += f"; {estimate.reason if estimate is not None else why}"
    return Trial(
        info.name,
        champion[0],
        info.version,
        info.rollout,
        verdict,
        reason,
        paired,
        labelled,
        comparison.as_dict() if comparison is not None else None,
        decided_on=decided_on,
        recheck_of=info.recheck_of,
        since=info.since,
    )


def _recheck(comparison: Comparison | None, paired: int, note: str, versions: tuple[str, str]) -> tuple[str, str]:
    """The labelled test's verdict on the outgoing champion kept in shadow after the champion won on
    estimates; `versions`: (champion, outgoing)."""
    new, old = versions
    what = f"re-check of v{new}, promoted without labels"
    if comparison is None:
        return "continue", f"{what}: {paired:,} request(s) answered by both; {note}"
    shown = comparison.figures(f"v{new} - v{old}")
    if comparison.verdict == "retire" and comparison.high >= 0:  # max_rows: no difference worth a switch
        shown = f"no difference after {comparison.rows:,} paired labels (max_rows): {shown}"
    if comparison.verdict == "promote":
        return "promote", f"{what}: the labels overturn it, v{old} is better: {shown}{note}"
    if comparison.verdict == "retire":
        return "retire", f"{what}: the labels confirm it: {shown}{note}"
    return "continue", f"{what}: {shown}{note}"


def settle(client: Any, trial: Trial, *, approval: str, lock_dir: Path, folder: Path) -> Trial:
    """Write the evidence and apply the verdict: promote (or mark ready), retire, or nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    own = (
        f"recheck-v{trial.challenger}-of-v{trial.recheck_of}" if trial.recheck_of else f"challenger-v{trial.challenger}"
    )
    evidence = folder / f"{own}.json"  # a re-check never overwrites the evidence of the version's own period
    at = datetime.now(UTC).isoformat(timespec="seconds")
    write_text_atomic(evidence, json.dumps({**trial.as_dict(), "at": at}, indent=2, default=str))
    trial = Trial(**{**trial.as_dict(), "evidence": str(evidence)})
    name, version = trial.model_name, trial.challenger
    audit = registry.Audit(trial.reason, "mlops monitor (online test)", str(evidence))
    if trial.recheck_of is not None:
        return _settle_recheck(client, trial, audit, lock_dir)
    if trial.verdict == "retire":
        tags = {"online_test": trial.reason, DECIDED_ON: trial.decided_on}
        registry.end_challenger(client, name, version, audit, tags=tags, lock_dir=lock_dir)
        return Trial(**{**trial.as_dict(), "action": "retired"})
    if trial.verdict != "promote":
        return trial
    if approval == "manual":
        tags = {"approval": "pending", "approval.champion": trial.champion, "online_test": trial.reason}
        registry.tag_version(client, name, version, {**tags, DECIDED_ON: trial.decided_on})
        registry.note_move(client, name, "ready", version, audit, lock_dir)
        return Trial(**{**trial.as_dict(), "action": "ready"})
    tags = {"promoted_at": at, "online_test": trial.reason, "decision": "promote", "promoted": "true"}
    tags[DECIDED_ON] = trial.decided_on
    registry.set_champion(client, name, version, tags, expected=trial.champion, lock_dir=lock_dir, audit=audit)
    promoted = Trial(**{**trial.as_dict(), "action": "promoted"})
    if trial.decided_on == "estimated":  # the outgoing champion stays in shadow until labels confirm it
        try:
            start_recheck(client, name, version, trial.champion, trial.since, lock_dir=lock_dir)
        except registry.ChampionMoved as exc:  # moved again in between: nothing left to re-check against
            return Trial(**{**promoted.as_dict(), "reason": f"{trial.reason}; no re-check started: {exc}"})
    return promoted


def _settle_recheck(client: Any, trial: Trial, audit: registry.Audit, lock_dir: Path) -> Trial:
    """Labels overturned a promotion made without labels: the previous champion is restored (and its
    shadow ends); labels confirmed it: the previous champion's shadow ends."""
    name, old = trial.model_name, trial.challenger
    if trial.verdict == "promote":
        at = datetime.now(UTC).isoformat(timespec="seconds")
        tags = {"restored_by_rollback": f"{at}: {trial.reason}"}
        rollback = registry.Audit(audit.reason, audit.via, audit.evidence, action="rollback")
        registry.set_champion(client, name, old, tags, expected=trial.champion, lock_dir=lock_dir, audit=rollback)
        registry.tag_version(client, name, trial.champion, {"rolled_back": f"{at}: {trial.reason}"})
        return Trial(**{**trial.as_dict(), "action": "rolled_back"})
    if trial.verdict == "retire":
        tags = {"online_test": trial.reason, "challenger.ended": f"re-check of v{trial.recheck_of} passed"}
        registry.end_challenger(client, name, old, audit, tags=tags, lock_dir=lock_dir)
        return Trial(**{**trial.as_dict(), "action": "confirmed"})
    return trial
