"""`mlops simulate-ct`: replay generated batches through the real loop, monitor -> (retrain -> gate -> promote).

Everything runs in its own workspace (by default `<workspace>/simulate-ct/<time>`), with its own
registry, contract and data, so the user's champion is never touched:

1. two stable batches become the training window, the contract is profiled from them and the
   training flow promotes the first champion;
2. each replayed batch arrives: the monitoring flow checks it against the contract, compares it
   with the champion's reference and, since the batch's labels arrive with it, measures decay;
3. an accepted batch joins the training window (the last `window` accepted batches; older ones
   move to an archive folder), a rejected one goes to quarantine;
4. on a retraining verdict the training flow runs on the window and its gate decides;
5. with `rollout="shadow"`, a candidate the gate passes becomes the challenger: the next batches
   are served with it in shadow (both answers in the prediction log, the batch's labels arriving in
   the labels folder), and the monitoring flow's online test promotes or retires it.

The champion's figure on each batch (accuracy for the loan stream, R² for the trip stream) is
measured as it arrives (before any retraining on it), beside that of the pipeline's recipe trained
on fresh rows of that batch's own distribution.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.core.config import PipelineConfig
from components.core.workspace import Workspace
from components.inference.predlog import PredictionLog
from components.modeling.sequential import OnlineTest
from components.monitoring import monitor
from components.simulation import ctsim
from components.tracking import registry


def simulation_config(
    base: PipelineConfig, home: Path, trials: int, stream: ctsim.Stream, rollout: str = "direct"
) -> PipelineConfig:
    """The user's settings, pointed at the simulation's workspace and stream, and kept quick."""
    data = base.model_dump()
    data["home"] = str(home)
    data["task"] = stream.task.name
    data["data"] = {
        "source": str(home / "data" / "window"),
        "target": stream.target,
        "id_column": stream.id_column,
        "time_column": stream.time_column,
        "name": stream.name,
    }
    data["validation"] = {**data["validation"], "suite_dir": str(home / "expectations"), "create_missing_suite": True}
    data["search"] = {**data["search"], "trials": trials, "workers": 1, "dask_address": None, "metric": None}
    data["evaluation"] = {**data["evaluation"], "plots": False, "slices": ()}
    data["label_review"] = {**data["label_review"], "enabled": False}
    promotion: dict[str, Any] = {
        "metric": stream.gate_metric,
        "min_score": None,
        "floors": {},
        "rollout": rollout,
        "approval": "auto",
    }
    data["promotion"] = {**data["promotion"], **promotion}
    return PipelineConfig.model_validate(data)


def _add_to_window(path: Path, window_dir: Path, archive: Path, keep: int) -> None:
    target = window_dir / path.name
    path.replace(target)
    files = sorted(window_dir.glob("batch_*.parquet"))
    for old in files[: max(len(files) - keep, 0)]:
        archive.mkdir(parents=True, exist_ok=True)
        old.replace(archive / old.name)


@dataclass
class _Replay:
    """One simulation's settings, folders and registry, to replay its batches one at a time."""

    config: PipelineConfig
    stream: ctsim.Stream
    home: Path
    workspace: Workspace
    client: Any
    rows: int
    window: int
    served_models: dict[str, Any] = field(default_factory=dict)  # each champion version loaded once
    displaced: str | None = None  # the champion the last online test replaced
    shadowed: dict[str, list[tuple[str, pd.DataFrame, pd.Series]]] = field(default_factory=dict)  # by challenger

    @property
    def window_dir(self) -> Path:
        return self.home / "data" / "window"

    def _served(self, version: str) -> Any:
        if version not in self.served_models:
            self.served_models[version] = registry.load_model(f"models:/{self.stream.name}/{version}")
        return self.served_models[version]

    def batch(self, planned: ctsim.PlannedBatch) -> ctsim.TimelineRow:
        """The batch arrives: the champion's and the best model's figures on it, then the monitor's
        verdict, the batch filed (window or quarantine), and a retraining when the verdict says so."""
        from flows.monitoring import monitoring_flow

        stream, seed = self.stream, self.config.seed
        champion = registry.get_champion(self.client, stream.name)
        assert champion is not None
        frame = stream.batch(self.rows, seed, planned.scenario, 100 + planned.index)
        path = self.home / "data" / "incoming" / f"batch_{100 + planned.index:04d}.parquet"
        frame.to_parquet(path)
        served = self._served(champion.version)
        served_score = best_score = None
        if planned.kind != "corrupted":
            best = ctsim.best_model(
                stream, planned.scenario, self.config, 2 * self.rows, seed, batch_index=1000 + planned.index
            )
            served_score, best_score = ctsim.score(stream, served, frame), ctsim.score(stream, best, frame)
        trial = registry.get_challenger(self.client, stream.name)
        if trial is not None and planned.kind != "corrupted":
            self._shadow(frame, planned.index, (champion.version, served), trial.version)
        result = monitoring_flow(self.config, data=str(path), retrain="off")
        row = ctsim.TimelineRow(
            batch=planned.index,
            kind=planned.kind,
            validation="rejected" if result.verdict == "rejected" else "passed",
            drift="-" if result.verdict == "rejected" else result.verdict,
            retrained=False,
            promoted=None,
            served_version=champion.version,
            served_score=served_score,
            best_score=best_score,
            detail=result.reason.splitlines()[0],
            realized=result.decay["current"] if result.decay else None,
            estimated=result.estimated["current"] if result.estimated else None,
        )
        if trial is not None and planned.kind != "corrupted":
            self._note_trial(row, frame, trial.version, champion.version, result.challenger)
        if self.displaced not in (None, champion.version) and served_score is not None:
            row.displaced_score = ctsim.score(stream, self._served(self.displaced), frame)
        if result.verdict == "rejected":
            quarantine = self.home / "quarantine"
            quarantine.mkdir(exist_ok=True)
            path.replace(quarantine / path.name)
        else:
            _add_to_window(path, self.window_dir, self.home / "data" / "archive", self.window)
        if result.verdict == "retrain":
            self._retrain(row, champion.version, result.window)
        return row

    def _retrain(self, row: ctsim.TimelineRow, version: str, window: str) -> None:
        """Train on the window; the gate's decision goes into the batch's row."""
        from flows.training import training_flow

        history = monitor.history_file(self.workspace.monitoring, self.stream.name)
        monitor.note_retraining(history, version, window)
        trained = training_flow(self.config)
        row.retrained = True
        row.promoted = trained.model_version if trained.promoted else None
        row.started = trained.model_version if trained.challenger else None
        outcome = "promoted" if trained.promoted else "challenger" if trained.challenger else "held back"
        row.detail = f"{row.detail}; {outcome}: {trained.reason}"

    def _shadow(self, frame: pd.DataFrame, index: int, champion: tuple[str, Any], challenger: str) -> None:
        """The batch served with the challenger in shadow (both answers in the prediction log), and its
        labels arriving in the folder monitoring reads."""
        stream = self.stream
        log = ctsim.shadow_log(stream, frame, champion, (challenger, self._served(challenger)))
        self.shadowed.setdefault(challenger, []).append((champion[0], log, frame[stream.target]))
        writer = PredictionLog(self.workspace.predictions / stream.name, flush_seconds=3600)
        writer.append(log)
        writer.close()
        labels = self.workspace.labels / stream.name
        labels.mkdir(parents=True, exist_ok=True)
        frame[[stream.id_column, stream.target]].to_parquet(labels / f"batch_{100 + index:04d}.parquet", index=False)

    def label_budget(self, challenger: str) -> str:
        """Labels the online test needs to decide on this challenger's shadow rows: the label queue's
        draw against random sampling, rounds of 50 labels, the median of 20 draws."""
        from components.monitoring import challenger as online
        from components.monitoring import labelqueue
        from components.simulation import labelbudget

        trial = self.shadowed[challenger]
        champion = trial[0][0]
        log = pd.concat([log for _, log, _ in trial], ignore_index=True)
        truth = pd.concat([labels for _, _, labels in trial], ignore_index=True)
        models = (self._served(champion), self._served(challenger))
        d, _ = online.differences(log, truth, self.stream.task, *models)
        task = self.stream.task.name
        priority = labelqueue.expected_gap(log, task)  # as the queue weights rows in a rollout
        found = labelbudget.budgets(d, priority.to_numpy(), OnlineTest.of(self.config.promotion.online))
        return f"v{challenger} vs v{champion} on {len(log):,} shadow rows: " + "; ".join(b.text() for b in found)

    def without_labels(self, challenger: str) -> str:
        """When the challenger's shadow rows would have decided it on each version's expected loss alone
        (promotion.online.without_labels: estimated), looked at every 50 requests, or why they could not."""
        from components.monitoring import unlabelled
        from flows.challenger import grader

        trial, name, task = self.shadowed[challenger], self.stream.name, self.stream.task
        champion, online = trial[0][0], self.config.promotion.online

        def graded(version: str) -> unlabelled.Grader:
            run_id = self.client.get_model_version(name, version).run_id
            return grader(self.workspace, self.client, (name, version, run_id), self._served(version), task)

        pair = (graded(champion), graded(challenger))
        why = unlabelled.distrust(task, pair, online)
        if why is not None:
            return f"v{challenger} vs v{champion}: would not decide: {why}"
        log = pd.concat([log for _, log, _ in trial], ignore_index=True).tail(online.max_rows)
        d, expected = unlabelled.expected_differences(log, task, pair, self.config.seed)
        for n in [*range(online.min_rows, len(d), 50), len(d)]:  # a look every 50 requests, then all of them
            found = unlabelled.decide(d[:n], expected[:n], task, online)
            if found.verdict != "continue":
                break
        said = found.reason.split(":")[0]  # estimated better / worse, or undecided without labels
        said += " (promote)" if found.verdict == "promote" else " (wait for labels)"
        interval = f"expected loss difference [{found.low:+.4f}, {found.high:+.4f}]"
        return f"v{challenger} vs v{champion}: {said} after {found.rows:,} requests, {interval}"

    def _note_trial(
        self, row: ctsim.TimelineRow, frame: pd.DataFrame, challenger: str, champion: str, trial: dict[str, Any] | None
    ) -> None:
        """The challenger's figure on the batch and the online test's verdict (a promotion included)."""
        row.challenger = challenger
        row.challenger_score = ctsim.score(self.stream, self._served(challenger), frame)
        if trial is None:
            return
        comparison = trial.get("comparison") or {}
        interval = f" [{comparison['low']:+.4f}, {comparison['high']:+.4f}]" if comparison else ""
        action = trial["action"] if trial["action"] != "none" else trial["verdict"]
        row.online = f"{action} after {trial['labelled_rows']:,} labels{interval}"
        if trial["action"] == "promoted":
            row.promoted, self.displaced = challenger, champion


def simulate_ct(
    base: PipelineConfig,
    home: Path,
    *,
    batches: int,
    rows: int,
    drift_at: int | None,
    concept_at: int | None,
    corrupt_at: int | None,
    window: int = 2,
    trials: int = 5,
    stream: ctsim.Stream = ctsim.STREAMS["classification"],
    rollout: str = "direct",
    on_row: Callable[[ctsim.TimelineRow], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[ctsim.TimelineRow], list[ctsim.Goal]]:
    from flows.training import training_flow

    plan = ctsim.plan_batches(batches, drift_at=drift_at, concept_at=concept_at, corrupt_at=corrupt_at)
    if home.exists() and any(home.iterdir()):
        raise FileExistsError(f"{home} is not empty: the simulation needs a workspace of its own")
    config = simulation_config(base, home, trials, stream, rollout)
    workspace = Workspace.at(home).ensure()
    window_dir, incoming = home / "data" / "window", home / "data" / "incoming"
    for folder in (window_dir, incoming):
        folder.mkdir(parents=True, exist_ok=True)
    # Batch indexes: 0-1 the initial window, 100+ the replayed batches, 1000+ fresh rows for the best model.
    for index in range(2):
        stream.batch(rows, config.seed, batch_index=index).to_parquet(window_dir / f"batch_{index:04d}.parquet")
    log(f"training the first {stream.name} champion ({stream.task.name}) on 2 stable batches of {rows:,} rows ...")
    first = training_flow(config)
    if not first.promoted:
        raise RuntimeError(f"the first champion was not promoted: {first.reason}")
    replay = _Replay(config, stream, home, workspace, registry.connect(workspace), rows, window)
    timeline: list[ctsim.TimelineRow] = []
    for planned in plan:
        row = replay.batch(planned)
        timeline.append(row)
        if on_row is not None:
            on_row(row)
    for row in timeline:
        if row.started and row.started in replay.shadowed:
            row.label_budget = replay.label_budget(row.started)
            row.without_labels = replay.without_labels(row.started)
    return timeline, ctsim.check_goals(timeline, plan, stream.figure)


def clean_up(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)


def as_dicts(rows: list[ctsim.TimelineRow]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    return [{**asdict(r), "gap": r.gap} for r in rows]
