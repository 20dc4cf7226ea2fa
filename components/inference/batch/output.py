"""Batch scoring's output: the part files joined in input order under a staged name, the summary,
and the whole-file entry point `score_file`."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.core.files import staged
from components.inference.batch.partition import (
    PartitionResult,
    score_partition,
)
from components.inference.batch.plan import (
    INPUT_ROW,
    OnInvalid,
    Partition,
    ScoringPlan,
    check_paths,
    default_rejects_path,
    plan_scoring,
    split_partitions,
)
from components.inference.scoring import ServingModel, serving_model_of


@dataclass(frozen=True)
class ScoreSummary:
    rows: int  # input rows
    scored: int
    rejected: int
    output: Path
    rejects: Path | None  # written in reject mode (possibly empty)


def _offset_column(table: pa.Table, column: str, offset: int) -> pa.Table:
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pc.add(table.column(index), pa.scalar(offset, pa.int64())))


def _publish(
    parts: Sequence[tuple[Path, int]],
    target: Path,
    schema: pa.Schema,
    offset_column: str | None,
    dictionary: bool | list[str] = True,
) -> None:
    """Join part files in order into `target`: written under a temporary name, then renamed."""
    if len(parts) == 1 and (parts[0][1] == 0 or offset_column is None):
        try:
            os.replace(parts[0][0], target)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # another filesystem: copy below
                raise
    with (
        staged(target, durable=False) as staging,
        pq.ParquetWriter(staging, schema, use_dictionary=dictionary) as writer,
    ):
        for path, offset in parts:
            source = pq.ParquetFile(path)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                if offset and offset_column is not None:
                    table = _offset_column(table, offset_column, offset)
                writer.write_table(table)


def assemble(
    plan: ScoringPlan, results: Sequence[PartitionResult], output: Path, rejects: Path | None = None
) -> ScoreSummary:
    """Join the partitions' files in input order; the rejects file first, the output last."""
    ordered = sorted(results, key=lambda r: r.index)
    offsets = np.concatenate([[0], np.cumsum([r.rows for r in ordered])[:-1]]).astype(int).tolist()
    output.parent.mkdir(parents=True, exist_ok=True)
    if plan.on_invalid == "reject":
        if rejects is None or plan.rejects_schema is None:
            raise ValueError("reject mode needs a rejects path")
        rejects.parent.mkdir(parents=True, exist_ok=True)
        parts = [(r.rejects, o) for r, o in zip(ordered, offsets, strict=True) if r.rejects is not None]
        _publish(parts, rejects, plan.rejects_schema, INPUT_ROW)
    # Row numbers of CSV partitions are relative: each part is shifted by the rows before it.
    _publish(
        [(r.output, o) for r, o in zip(ordered, offsets, strict=True)],
        output,
        plan.output_schema,
        INPUT_ROW if plan.id_column is None else None,
        plan.dictionary_columns,
    )
    return ScoreSummary(
        rows=sum(r.rows for r in ordered),
        scored=sum(r.scored for r in ordered),
        rejected=sum(r.rejected for r in ordered),
        output=output,
        rejects=rejects if plan.on_invalid == "reject" else None,
    )


@contextlib.contextmanager
def scratch_dir(output: Path) -> Iterator[Path]:
    """A private folder next to the output for part files (same filesystem: the final rename is atomic)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    folder = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.parts"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def part_paths(folder: Path, part: Partition) -> tuple[Path, Path]:
    return folder / f"{part.index:05d}.parquet", folder / f"{part.index:05d}.rejects.parquet"


def score_file(
    model: Any,
    input_path: Path,
    output_path: Path,
    *,
    model_version: str,
    suite: Mapping[str, Any] | None = None,
    id_column: str | None = None,
    target: str | None = None,
    on_invalid: OnInvalid = "fail",
    rejects_path: Path | None = None,
    chunk_rows: int = 100_000,
    partitions: int = 1,
    scored_at: datetime | None = None,
    half_width: float | None = None,
) -> ScoreSummary:
    """Plan, score every partition in this process, and assemble: the scoring flow without Prefect.

    `model` is a loaded `ServingModel`, or a fitted pipeline (then compiled and checked here)."""
    served = model if isinstance(model, ServingModel) else serving_model_of(model)
    if on_invalid == "reject" and rejects_path is None:
        rejects_path = default_rejects_path(output_path)
    check_paths(input_path, output_path, rejects_path)
    plan = plan_scoring(
        input_path,
        served.model,
        model_version=model_version,
        suite=suite,
        id_column=id_column,
        target=target,
        on_invalid=on_invalid,
        chunk_rows=chunk_rows,
        scored_at=scored_at,
        half_width=half_width,
    )
    with scratch_dir(output_path) as folder:
        results: list[PartitionResult] = []
        for part in split_partitions(plan, partitions):
            out, rejected = part_paths(folder, part)
            before = sum(r.rows for r in results)
            results.append(score_partition(served, plan, part, out, rejected, first_row=before))
        return assemble(plan, results, output_path, rejects_path)
