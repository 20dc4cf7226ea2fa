"""`mlops simulate` and `mlops simulate-ct`: generated batches, and the continuous-training replay."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from components.core.errors import UserError
from components.core.workspace import Workspace
from flows.cli.common import (
    EXIT_RETRAIN,
    ConfigOption,
    _fail,
    _load,
    _prefect_api,
    _run_flow,
    _workspace,
    err,
    out,
)

if TYPE_CHECKING:
    from components.core.config import PipelineConfig


class RolloutChoice(StrEnum):
    direct = "direct"
    shadow = "shadow"


RolloutOption = Annotated[
    RolloutChoice,
    typer.Option(
        "--rollout",
        help="direct: a candidate the gate passes is promoted at once; shadow: it becomes the challenger, "
        "served in shadow on the next batches until the online test on their labels promotes or retires it.",
    ),
]


class StreamChoice(StrEnum):
    loans = "loans"
    trips = "trips"


def simulate(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: <workspace>/data/loan_default or .../taxi_trips)."),
    ] = None,
    stream: Annotated[
        StreamChoice,
        typer.Option(help="loans: loan defaults (binary classification); trips: taxi trip minutes (regression)."),
    ] = StreamChoice.loans,
    batches: Annotated[int, typer.Option(min=1, help="Number of weekly batches.")] = 4,
    rows: Annotated[int, typer.Option(min=1, help="Rows per batch.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    scenario_from: Annotated[int, typer.Option(min=0, help="First batch the scenario applies to.")] = 0,
    covariate_drift: Annotated[float, typer.Option(min=0, max=1, help="Shift of the inputs (0-1).")] = 0.0,
    concept_drift: Annotated[
        float, typer.Option(min=0, max=1, help="Change of the mechanism: P(default|x), or the pace per km (0-1).")
    ] = 0.0,
    schema_change: Annotated[bool, typer.Option(help="Rename a column and add a new one.")] = False,
    unit_change: Annotated[
        bool, typer.Option(help="A unit bug: annual_income in thousands, or distance_km in metres.")
    ] = False,
    label_noise: Annotated[float, typer.Option(min=0, max=1, help="Fraction of labels made wrong.")] = 0.0,
    duplicates: Annotated[float, typer.Option(min=0, max=1, help="Fraction of rows duplicated.")] = 0.0,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Do nothing when the folder already holds batches.")
    ] = False,
    config_path: ConfigOption = None,
) -> None:
    """Write seeded batches of a generated stream as Parquet, optionally with a scenario."""
    from components.simulation.simulate import Scenario, write_batches

    if out_dir is None:
        folder = "loan_default" if stream is StreamChoice.loans else "taxi_trips"
        out_dir = Workspace.at(_load(config_path).home).data / folder
    if skip_existing and any(out_dir.glob("batch_*.parquet")):
        err.print(f"{out_dir} already holds batches; left as they are", highlight=False)
        return
    scenario = Scenario(
        covariate_drift=covariate_drift,
        concept_drift=concept_drift,
        schema_change=schema_change,
        unit_change=unit_change,
        label_noise=label_noise,
        duplicate_rate=duplicates,
    )
    paths = write_batches(out_dir, batches, rows, seed, scenario, scenario_from=scenario_from, stream=stream.value)
    err.print(f"wrote {len(paths)} batches x {rows} rows to {out_dir}", highlight=False)


def simulate_ct(
    config_path: ConfigOption = None,
    batches: Annotated[
        int, typer.Option("--batches", "-k", min=3, help="Batches replayed after the first champion.")
    ] = 12,
    rows: Annotated[int, typer.Option("--rows", min=500, help="Rows per batch.")] = 4000,
    drift_at: Annotated[
        int | None, typer.Option("--drift-at", help="Covariate drift from this batch on (default K/3; -1: none).")
    ] = None,
    concept_at: Annotated[
        int | None, typer.Option("--concept-at", help="Concept drift from this batch on (default 2K/3; -1: none).")
    ] = None,
    corrupt_at: Annotated[
        int | None,
        typer.Option("--corrupt-at", help="A corrupted batch (income in thousands) here (default K/2; -1: none)."),
    ] = None,
    window: Annotated[int, typer.Option("--window", min=1, help="Training window: the last N accepted batches.")] = 2,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Search trials per training run.")] = 5,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="classification: the loan stream, judged on accuracy; regression: the taxi-trip stream, on R².",
        ),
    ] = "classification",
    home: Annotated[
        Path | None,
        typer.Option("--home", help="The simulation's own workspace (default: <workspace>/simulate-ct/<time>)."),
    ] = None,
    rollout: RolloutOption = RolloutChoice.direct,
    as_json: Annotated[bool, typer.Option("--json", help="Print the timeline and goals as one line of JSON.")] = False,
) -> None:
    """Replay K generated batches through monitor -> (retrain -> gate -> promote) and print the timeline.

    Scenarios: covariate drift from --drift-at, concept drift from --concept-at, a corrupted batch at
    --corrupt-at. Runs in a workspace of its own (a separate registry), never touching your champion.
    Goals: the corrupted batch is rejected; each shift is detected within one batch; after it, served
    accuracy (R² for regression) is within 2 points of a model trained on the batch's own distribution;
    no retraining on stable batches; with --rollout shadow, no worse challenger promoted, a better one
    within two labelled batches. Exit status: 0 all goals met, 4 a goal missed, 1 an error.
    """
    from components.simulation.ctsim import STREAMS

    if task not in STREAMS:
        _fail(f"--task must be one of {', '.join(STREAMS)}, not {task!r}")
    stream = STREAMS[task]
    config = _load(config_path)
    workspace = _workspace(config)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    sim_home = (home or workspace.root / "simulate-ct" / stamp).expanduser().resolve()
    _prefect_api(config, workspace)
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(variable, None)  # the simulation's registry is its own workspace's, never a shared server
    title = f"continuous training of {stream.name} ({task}), {batches} batches of {rows:,} rows ({sim_home})"
    view = _TimelineView(stream, title, rollout=rollout == RolloutChoice.shadow)
    replay = _ReplayOptions(batches, rows, drift_at, concept_at, corrupt_at, window, trials, str(rollout))
    timeline, goals = _replay(config, sim_home, stream, replay, view.show)
    _print_goals(view.table, timeline, goals, sim_home, as_json)


@dataclass(frozen=True)
class _ReplayOptions:
    """`mlops simulate-ct`'s options for the replay; a scenario's batch defaults from the batch count."""

    batches: int
    rows: int
    drift_at: int | None
    concept_at: int | None
    corrupt_at: int | None
    window: int
    trials: int
    rollout: str = "direct"

    def scenario(self) -> dict[str, int | None]:
        """Where each scenario starts: as given, the default when not (None), none when negative."""

        def default(value: int | None, fallback: int) -> int | None:
            return fallback if value is None else (None if value < 0 else value)

        return {
            "drift_at": default(self.drift_at, self.batches // 3),
            "concept_at": default(self.concept_at, 2 * self.batches // 3),
            "corrupt_at": default(self.corrupt_at, self.batches // 2),
        }


class _TimelineView:
    """Each replayed batch as a line on stderr while it runs, and as a row of the table printed at the end."""

    def __init__(self, stream: Any, title: str, rollout: bool = False) -> None:
        self.figure, self.metric, self.rollout = stream.figure, stream.gate_metric, rollout
        self.table = Table(title=title)
        trial = (f"challenger {self.figure}", "online test") if rollout else ()
        for column in (
            "batch",
            "scenario",
            "validation",
            "drift verdict",
            "retrained",
            "promoted",
            "served",
            f"served {self.figure}",
            f"best {self.figure}",
            "gap (pts)",
            f"{stream.gate_metric} realized / estimated",
            *trial,
        ):
            self.table.add_column(
                column,
                justify="right"
                if column in ("batch", "gap (pts)") or "served " in column or "best " in column
                else "left",
            )

    def show(self, row: Any) -> None:
        gap = "" if row.gap is None else f"{100 * row.gap:+.1f}"
        acc = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        err.print(
            f"batch {row.batch:>2} {row.kind:<15} {row.validation:<8} {row.drift:<9} "
            f"{'retrained' if row.retrained else '':<9} {('v' + row.promoted) if row.promoted else '':<4} "
            f"served v{row.served_version} {self.figure} {acc(row.served_score)} best {acc(row.best_score)} {gap}"
            + (f" {self.metric} {acc(row.realized)} est. {acc(row.estimated)}" if row.estimated is not None else "")
            + (f" challenger {_trial_cell(row, acc)} {row.online}" if row.challenger or row.started else ""),
            highlight=False,
            soft_wrap=True,
        )
        self.table.add_row(
            str(row.batch),
            row.kind,
            row.validation,
            row.drift,
            "yes" if row.retrained else "",
            f"v{row.promoted}" if row.promoted else "",
            f"v{row.served_version}",
            acc(row.served_score),
            acc(row.best_score),
            gap,
            f"{acc(row.realized)} / {acc(row.estimated) or '-'}" if row.realized is not None else "",
            *((_trial_cell(row, acc), row.online) if self.rollout else ()),
        )


def _trial_cell(row: Any, acc: Callable[[float | None], str]) -> str:
    """The challenger tried on the batch and its figure, or the one started after it."""
    if row.challenger:
        return f"v{row.challenger} {acc(row.challenger_score)}"
    return f"v{row.started} started" if row.started else ""


def _replay(
    config: PipelineConfig, sim_home: Path, stream: Any, options: _ReplayOptions, show: Callable[[Any], None]
) -> tuple[list[Any], list[Any]]:
    """The replay's timeline and goals; a user's error exits 1 with its message, any other error 1."""
    from flows import simulate_ct as sim

    def one(exc: UserError) -> None:
        _fail(str(exc))  # every error of the replay's settings exits 1

    return _run_flow(
        config,
        lambda: sim.simulate_ct(
            config,
            sim_home,
            batches=options.batches,
            rows=options.rows,
            **options.scenario(),
            window=options.window,
            trials=options.trials,
            stream=stream,
            rollout=options.rollout,
            on_row=show,
            log=lambda message: err.print(message, highlight=False),
        ),
        on_user_error=one,
        user_errors=(ValueError, FileExistsError, UserError),
    )


def _print_goals(table: Table, timeline: list[Any], goals: list[Any], sim_home: Path, as_json: bool) -> None:
    """The timeline's table, each goal met or missed, and where everything is; exit 4 when a goal was missed."""
    from flows import simulate_ct as sim

    (out if out.is_terminal else Console(width=140)).print(table)  # a log file gets the table unsquashed
    for goal in goals:
        mark = "[green]PASS[/]" if goal.met else "[bold red]FAIL[/]"
        out.print(f"  {mark}  {goal.name}: {goal.detail}", highlight=False, soft_wrap=True)
    for row in timeline:  # measured, not judged
        if row.label_budget:
            out.print(f"  labels for the online test to decide: {row.label_budget}", highlight=False, soft_wrap=True)
        if row.without_labels:
            out.print(f"  without labels (estimated): {row.without_labels}", highlight=False, soft_wrap=True)
    out.print(f"reports, registry and data: {sim_home}", highlight=False, soft_wrap=True)
    if as_json:
        from dataclasses import asdict

        print(
            json.dumps({"home": str(sim_home), "timeline": sim.as_dicts(timeline), "goals": [asdict(g) for g in goals]})
        )
    if not all(goal.met for goal in goals):
        raise typer.Exit(EXIT_RETRAIN)
