"""`mlops score`: batch scoring of a file with the champion."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from components.core.errors import UserError
from flows.cli.common import (
    EXIT_REJECTED,
    ConfigOption,
    ModelOption,
    _fail,
    _model,
    _prefect_api,
    _run_flow,
    _workspace,
    err,
)

if TYPE_CHECKING:
    from components.core.config import PipelineConfig
    from flows.scoring import ScoringResult


class OnInvalid(StrEnum):
    fail = "fail"
    reject = "reject"


def score(
    input_path: Annotated[Path, typer.Option("--input", "-i", help="CSV or Parquet file to score.")],
    output_path: Annotated[
        Path, typer.Option("--output", "-o", help="Parquet file to write (temporary name until complete).")
    ],
    config_path: ConfigOption = None,
    name: ModelOption = None,
    id_column: Annotated[
        str | None, typer.Option("--id-column", help="Id column carried into the output (default: the model's).")
    ] = None,
    on_invalid: Annotated[
        OnInvalid | None,
        typer.Option(
            "--on-invalid",
            help="Rows breaking the contract: fail the job, or reject them into the rejects file and score "
            "the rest (default: scoring.on_invalid, fail).",
        ),
    ] = None,
    rejects_path: Annotated[
        Path | None,
        typer.Option(
            "--rejects", help="Rejects file; implies --on-invalid reject (default: <output stem>.rejects.parquet)."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Score on a local Dask cluster of N processes.")
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="Score on this Dask scheduler, e.g. tcp://host:8786.")
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option("--chunk-rows", min=1, help="Rows per chunk (default: scoring.chunk_rows).")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar on stderr (default: when it is a terminal)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one last line of JSON with the outcome.")] = False,
) -> None:
    """Score a CSV or Parquet file with the champion into Parquet, checked against the training contract.

    Exit status: 0 when the file was scored (in reject mode, with its invalid rows set aside), 3 when the
    data breaks the contract (unreadable, a model column missing or of the wrong type, or invalid rows
    with --on-invalid fail), 1 on any other error. A file at the output path is always a complete one.
    """
    model_name, config = _model(config_path, name, "`mlops score`")
    config = _scoring_settings(config, on_invalid, rejects_path, workers, dask_address, chunk_rows)
    workspace = _workspace(config)
    rejects = _checked_rejects(config, input_path, output_path, rejects_path)
    _prefect_api(config, workspace)
    show_progress = err.is_terminal if progress is None else progress
    result = _score(config, model_name, input_path, output_path, id_column, rejects, show_progress)
    _print_scored(result, as_json)


def _scoring_settings(
    config: PipelineConfig,
    on_invalid: OnInvalid | None,
    rejects_path: Path | None,
    workers: int | None,
    dask_address: str | None,
    chunk_rows: int | None,
) -> PipelineConfig:
    """The model's scoring settings with the command's options over them."""
    if rejects_path is not None and on_invalid is OnInvalid.fail:
        _fail("--rejects sets invalid rows aside: it cannot be combined with --on-invalid fail")
    mode = on_invalid.value if on_invalid else "reject" if rejects_path else None
    return config.with_overrides(
        scoring={"on_invalid": mode, "workers": workers, "dask_address": dask_address, "chunk_rows": chunk_rows}
    )


def _checked_rejects(
    config: PipelineConfig, input_path: Path, output_path: Path, rejects_path: Path | None
) -> Path | None:
    """The rejects file (in reject mode), once the paths are checked: before Prefect starts."""
    from components.inference import batch
    from components.inference.scoring import InputError

    rejects = (
        (rejects_path or batch.default_rejects_path(output_path)) if config.scoring.on_invalid == "reject" else None
    )
    try:
        batch.check_paths(input_path, output_path, rejects)
    except InputError as exc:
        _fail(str(exc))
    return rejects


def _score(
    config: PipelineConfig,
    model_name: str,
    input_path: Path,
    output_path: Path,
    id_column: str | None,
    rejects: Path | None,
    show_progress: bool,
) -> ScoringResult:
    """The scoring flow's result; a contract failure exits 3, any other error 1."""
    from components.inference import batch
    from flows.scoring import scoring_flow

    def rejected(exc: UserError) -> None:
        if isinstance(exc, batch.InvalidInput):
            _fail(f"rejected: {exc}", EXIT_REJECTED)

    return _run_flow(
        config,
        lambda: scoring_flow(
            config,
            input_path,
            output_path,
            model_name=model_name,
            id_column=id_column,
            rejects_path=rejects,
            show_progress=show_progress,
        ),
        on_user_error=rejected,
    )


def _print_scored(result: ScoringResult, as_json: bool) -> None:
    err.print(
        f"scored {result.scored:,} of {result.rows:,} rows with {result.model_name} v{result.model_version} "
        f"in {result.seconds:.1f} s ({result.rows_per_second:,.0f} rows/s, {result.workers} worker(s)) "
        f"-> {result.output}",
        highlight=False,
        soft_wrap=True,
    )
    if result.rejects is not None:
        err.print(f"rejected {result.rejected:,} rows -> {result.rejects}", highlight=False, soft_wrap=True)
    if as_json:
        print(result.as_json())
