"""`mlops monitor`: drift and decay of a window, and retraining when they hold."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.common import (
    EXIT_REJECTED,
    EXIT_RETRAIN,
    ConfigOption,
    ModelOption,
    _model,
    _prefect_api,
    _run_flow,
    _workspace,
    err,
)

if TYPE_CHECKING:
    from components.core.config import PipelineConfig
    from flows.monitoring import MonitorResult


class Retrain(StrEnum):
    inline = "inline"
    event = "event"
    off = "off"


def monitor(
    config_path: ConfigOption = None,
    name: ModelOption = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="New rows: CSV/Parquet file, folder or glob (default: the prediction log)."),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option("--labels", help="Labels that arrived for those rows: a file of id and target columns."),
    ] = None,
    retrain: Annotated[
        Retrain | None,
        typer.Option(
            "--retrain",
            help="On a sustained alarm: run training now (inline), emit mlops.retrain.requested for "
            "`mlops deploy` (event), or only report (off). Default: monitoring.retrain.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as one last line of JSON.")] = False,
) -> None:
    """Compare new data (or the service's prediction log) with the champion's training reference.

    Per-feature drift (KS / chi-square with PSI), score drift (Jensen-Shannon), null-rate and
    new-category shifts, and, with labels, decay of the evaluation metric. Retraining is due when
    drift or decay held in monitoring.min_windows of the last monitoring.windows windows. The
    report is written as HTML and JSON under the workspace and logged to MLflow.

    Exit status: 0 no retraining due (stable, a first alarm being watched, or too few rows), 4 drift
    or decay sustained: retraining triggered (or due, with --retrain off), 3 the data breaks the
    contract, 1 any other error.
    """

    _, config = _model(config_path, name, "`mlops monitor`")
    workspace = _workspace(config)
    _prefect_api(config, workspace)
    result = _monitor(config, data, labels, retrain)
    _print_verdict(result)
    if as_json:
        print(result.as_json())
    if result.verdict == "rejected":
        raise typer.Exit(EXIT_REJECTED)
    if result.verdict == "retrain":
        raise typer.Exit(EXIT_RETRAIN)


def _monitor(config: PipelineConfig, data: str | None, labels: str | None, retrain: Retrain | None) -> MonitorResult:
    """The monitoring flow's result; a user's error exits with its status, any other error 1."""
    from flows.monitoring import monitoring_flow

    return _run_flow(
        config,
        lambda: monitoring_flow(config, data=data, labels=labels, retrain=retrain.value if retrain else None),
    )


def _print_verdict(result: MonitorResult) -> None:
    """The verdict, what the contract and the data-quality checks said, the report and any retraining."""
    colour = {"stable": "green", "watching": "yellow", "retrain": "red", "rejected": "red"}.get(result.verdict, "dim")
    err.print(
        f"{result.model_name} v{result.model_version}, {result.window} ({result.rows:,} rows): "
        f"[bold {colour}]{result.verdict}[/]: {result.reason}",
        highlight=False,
        soft_wrap=True,
    )
    if result.contract and not result.contract.startswith("clean"):
        err.print(f"  contract: {result.contract}", highlight=False, soft_wrap=True)
    if result.rows_set_aside:
        err.print(f"  {result.rows_set_aside} row(s) broke row rules and were left out", highlight=False)
    for issue in result.quality:
        err.print(f"  data quality: {issue}", highlight=False, soft_wrap=True)
    if result.report_html:
        err.print(f"report: {result.report_html}", highlight=False, soft_wrap=True)
    if result.retraining == "ran" and result.training:
        t = result.training
        verdict = (
            "promoted: "
            if t.get("promoted")
            else ""
            if t.get("challenger") or t.get("awaiting_approval")
            else "held back: "
        )
        err.print(f"retrained: v{t.get('model_version')} {verdict}{t.get('reason')}", highlight=False, soft_wrap=True)
    elif result.retraining == "event":
        err.print("retraining requested: emitted mlops.retrain.requested", highlight=False)
    if result.challenger:
        trial = result.challenger
        done = f" ({trial['action'].replace('_', ' ')})" if trial["action"] != "none" else ""
        on = " on estimated performance" if trial.get("decided_on") == "estimated" else ""
        who = f"challenger v{trial['challenger']} ({trial['rollout']})"
        if trial.get("recheck_of"):  # the outgoing champion, kept in shadow after a promotion without labels
            who = f"previous champion v{trial['challenger']} in shadow"
        err.print(
            f"{who}: {trial['verdict']}{on}{done}: {trial['reason']}",
            highlight=False,
            soft_wrap=True,
        )
