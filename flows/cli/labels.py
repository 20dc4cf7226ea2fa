"""`mlops label-queue`: the served rows whose labels would teach the most, and their labels taken back."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import ConfigOption, ModelOption, _fail, _model, _workspace, err

SizeOption = Annotated[int, typer.Option("--size", "-k", min=1, help="How many rows to queue.")]


def label_queue(
    config_path: ConfigOption = None,
    name: ModelOption = None,
    size: SizeOption = 50,
    since: Annotated[
        str | None, typer.Option("--since", help="Only rows served from this time on (ISO 8601, UTC if no zone).")
    ] = None,
    random_share: Annotated[
        float,
        typer.Option(
            "--random-share",
            min=0.0,
            max=1.0,
            help="Share of the rows drawn at random: the unbiased sample monitoring measures the metric on.",
        ),
    ] = 0.25,
    output: Annotated[
        Path | None,
        typer.Option("--out", help="The queue file (default: <workspace>/label-queue/<model>/queue-<time>.csv)."),
    ] = None,
    ingest: Annotated[
        Path | None,
        typer.Option(
            "--ingest",
            help="Take back a filled-in queue file: its labelled rows join monitoring and, when data.source is "
            "a folder of batches, the next training run.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as one last line of JSON.")] = False,
) -> None:
    """Write the served rows whose labels would teach the most for people to label, or take a
    filled-in file back.

    From the prediction log, a classifier's least confident answers (closest to the decision
    threshold, or the lowest probability of the chosen class), a regressor's rows spread over the
    range of its answers; each id once, none already labelled or waiting in an earlier queue. A
    share is drawn at random instead: monitoring measures the realized metric on those alone (on
    the unsure rows every model looks worse than on what it serves). During a rollout the rows are
    drawn with probabilities that grow where champion and challenger disagree, recorded beside the
    queue file so the challenger's online test can weight their labels.
    Fill in the target column and pass the file to --ingest.
    """
    from components.core.errors import UserError

    model_name, config = _model(config_path, name, "`mlops label-queue`")
    workspace = _workspace(config)
    if not config.data.id_column:
        _fail("the label queue needs data.id_column: labels are joined to served rows on it")
    try:
        outcome = _ingest(config, workspace, model_name, ingest) if ingest else None
        if outcome is None:
            outcome = _queue(config, workspace, model_name, (size, random_share), since, output)
    except UserError as exc:
        _fail(str(exc), exc.exit_status)
    if as_json:
        print(json.dumps(outcome, default=str))


def _queue(
    config: Any, workspace: Any, model_name: str, size: tuple[int, float], since: str | None, output: Path | None
) -> dict:
    from components.inference.predlog import read_prediction_log
    from components.monitoring import labelqueue

    log = read_prediction_log(workspace.predictions / model_name, since=_since(since))
    if log.empty:
        _fail(f"nothing in the prediction log of {model_name!r}{' since ' + since if since else ''}: serve it first")
    result = labelqueue.write_queue(
        log,
        task=_task(workspace, model_name, config, log),
        id_column=config.data.id_column,
        target=config.data.target,
        size=size[0],
        random_share=size[1],
        seed=config.seed,
        folder=workspace.label_queue / model_name,
        labels=labelqueue.label_files(labelqueue.label_sources(config, model_name)),
        out=output,
    )
    left = f"{result.labelled} already labelled, {result.queued} waiting in earlier queues"
    if result.path is None:
        err.print(f"{model_name}: nothing to queue among {result.candidates:,} served ids ({left})", highlight=False)
    else:
        err.print(
            f"{model_name}: {result.rows} of {result.candidates:,} served ids queued, {result.strategy} ({left})\n"
            f"fill in {config.data.target!r} in {result.path} and run `mlops label-queue --ingest {result.path}`",
            highlight=False,
            soft_wrap=True,
        )
    return asdict(result)


def _ingest(config: Any, workspace: Any, model_name: str, path: Path) -> dict:
    from components.core.config import dataset_name
    from components.data import contract
    from components.data.extract import is_database_url
    from components.monitoring import labelqueue

    if not path.is_file():
        _fail(f"{path} is not a file")
    source = config.data.source.replace("{home}", str(config.home)) if config.data.source else None
    folder = Path(source).expanduser() if source and not is_database_url(source) else None
    suite = contract.suite_path(config.validation.suite_dir, dataset_name(config))
    result = labelqueue.ingest(
        path,
        id_column=config.data.id_column,
        target=config.data.target,
        time_column=config.data.time_column,
        labels_folder=workspace.labels / model_name,
        data_folder=folder if folder is not None and folder.is_dir() else None,
        min_batch_rows=labelqueue.min_batch_rows(contract.load_suite(suite)) if suite.is_file() else 1,
    )
    err.print(
        f"{model_name}: {result.labelled} label(s) taken back ({result.blank} row(s) still blank); "
        f"monitoring reads them from {result.labels_path}; training: {result.batch_note}",
        highlight=False,
        soft_wrap=True,
    )
    return asdict(result)


def _since(text: str | None) -> datetime | None:
    from datetime import UTC

    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--since {text!r} is not an ISO 8601 time (e.g. 2026-12-01 or 2026-12-01T08:00)")
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _task(workspace: Any, model_name: str, config: Any, log: Any) -> str:
    """The champion's task (its version's tag), else the configured one, else what the log shows."""
    from components.inference.predlog import PREDICTION, PROBABILITY
    from components.tracking import registry

    champion = registry.get_champion(registry.connect(workspace), model_name)
    if champion is not None and champion.tags.get("task"):
        return champion.tags["task"]
    if config.task:
        return str(config.task)
    if log[PROBABILITY].isna().all():
        return "regression"
    return "binary" if log[PREDICTION].nunique() <= 2 else "multiclass"
