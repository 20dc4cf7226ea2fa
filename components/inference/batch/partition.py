"""Batch scoring of one partition: its chunks checked, scored through the service's path (the compiled
model when proven, else the pipeline: `ServingModel.predict_inputs`) and written to
part files (answers, and rejected rows with their reason)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.data.rows import as_floats
from components.inference.batch.checking import (
    _check_rows,
    _Checked,
)
from components.inference.batch.plan import (
    ERROR_EXAMPLES,
    InvalidRows,
    Partition,
    ScoringPlan,
    ScoringStopped,
)
from components.inference.batch.reading import (
    _batches,
)
from components.inference.inputs import Inputs, inputs_from_frame, text_codes
from components.inference.scoring import ServingModel


@dataclass(frozen=True)
class PartitionResult:
    index: int
    rows: int  # input rows read
    scored: int
    rejected: int
    output: Path
    rejects: Path | None  # None when the partition rejected nothing


ProgressCallback = Callable[[int, int], None]  # (rows done, bytes done) in this partition


def _inputs(plan: ScoringPlan, arrays: Mapping[str, pa.Array], keep: pa.Array | None) -> Inputs:
    data: dict[str, Any] = {}
    coded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for column in plan.schema.columns:
        values = arrays[column] if keep is None else arrays[column].filter(keep)
        if column in plan.schema.numeric:
            data[column] = as_floats(values)
        elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            coded[column] = text_codes(values)  # each distinct text matched once, never a Python string a row
        else:
            data[column] = values.to_pandas()
    rows = len(values) if plan.schema.columns else 0
    frame = pd.DataFrame(data, index=pd.RangeIndex(rows))  # its length, even when every column is coded
    return inputs_from_frame(frame, plan.schema.numeric, plan.schema.categorical, coded)


def _scored_table(
    plan: ScoringPlan,
    model: ServingModel,
    checked: _Checked,
    keep: pa.Array | None,
    first_row: int,
    rows: int,
    threads: int = 1,
) -> pa.Table:
    inputs = _inputs(plan, checked.arrays, keep)
    n = len(inputs)
    if plan.id_column is not None:
        ids = checked.arrays[plan.id_column]
        key = ids if keep is None else ids.filter(keep)
    else:
        positions = pa.array(np.arange(first_row, first_row + rows, dtype=np.int64))
        key = positions if keep is None else positions.filter(keep)
    fields = plan.output_schema
    empty = pa.array([], type=pa.float64())
    columns: dict[str, pa.Array] = {
        fields.field(0).name: key.cast(fields.field(0).type),
        "model_version": pa.repeat(pa.scalar(plan.model_version, pa.string()), n),
        "scored_at": pa.repeat(pa.scalar(plan.scored_at, fields.field("scored_at").type), n),
    }
    answer = model.predict_arrays(inputs, plan.half_width, threads) if n else None
    columns["prediction"] = pa.array(answer.labels if answer else [], type=fields.field("prediction").type)
    if "probability" in fields.names:
        probabilities = answer.probabilities if answer else None
        columns["probability"] = pa.array(probabilities, type=pa.float64()) if probabilities is not None else empty
    if answer is not None and answer.class_probabilities is not None:
        for position, label in enumerate(answer.classes):
            columns[f"probability_{label}"] = pa.array(answer.class_probabilities[:, position])
    if "lower" in fields.names:
        bounds = answer is not None and answer.lower is not None and answer.upper is not None
        columns["lower"] = pa.array(answer.lower, type=pa.float64()) if bounds else empty  # type: ignore[union-attr]
        columns["upper"] = pa.array(answer.upper, type=pa.float64()) if bounds else empty  # type: ignore[union-attr]
    return pa.Table.from_arrays([columns.get(name, empty) for name in fields.names], schema=fields)


def _rejected_table(plan: ScoringPlan, batch: pa.RecordBatch, checked: _Checked, first_row: int) -> pa.Table:
    assert plan.rejects_schema is not None and checked.invalid is not None
    rows = np.flatnonzero(checked.invalid)
    picked = batch.take(pa.array(rows))
    arrays = []
    for name in plan.columns:
        values = picked.column(name)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        arrays.append(values.cast(plan.rejects_schema.field(name).type))
    arrays += [pa.array(rows + first_row, type=pa.int64()), pa.array(checked.reasons, type=pa.string())]
    return pa.Table.from_arrays(arrays, schema=plan.rejects_schema)


def _where(plan: ScoringPlan, part: Partition, row: int, first_row: int | None) -> str:
    """A row's position for an error message; a CSV partition past the first may not know its first row."""
    if plan.format == "parquet":
        first_row = part.start
    elif part.start == plan.data_start:
        first_row = 0
    if first_row is None:
        return f"data row {row} of the lines from byte {part.start}"
    return f"row {first_row + row}"


def _broken_rows(
    plan: ScoringPlan, part: Partition, checked: _Checked, rows: int, first_row: int | None
) -> InvalidRows:
    """The error for a chunk with rows breaking the contract, naming the first few and why."""
    assert checked.invalid is not None
    bad = np.flatnonzero(checked.invalid)
    examples = "; ".join(
        f"{_where(plan, part, rows + int(r), first_row)}: {checked.reasons[i]}"
        for i, r in enumerate(bad[:ERROR_EXAMPLES])
    )
    more = f" (and {len(bad) - ERROR_EXAMPLES} more in this chunk)" if len(bad) > ERROR_EXAMPLES else ""
    return InvalidRows(
        f"{plan.input_path}: rows break the contract (suite {plan.contract.suite!r}): "
        f"{examples}{more}; nothing was written. Fix the data, or score the valid rows and "
        "set the others aside with --on-invalid reject (scoring.on_invalid: reject)"
    )


def score_partition(
    model: ServingModel,
    plan: ScoringPlan,
    part: Partition,
    output: Path,
    rejects: Path | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    use_threads: bool = True,
    first_row: int | None = None,
) -> PartitionResult:
    """Score one partition chunk by chunk into `output` (and its rejected rows into `rejects`).

    Raises InvalidRows at the first chunk with a row breaking the contract when `plan.on_invalid` is
    `fail`. The part files are removed when it raises. `first_row`, the input row number of the
    partition's first row, is only needed for error messages about a CSV partition past the first.
    """
    # One process alone uses the machine's cores for a forest's trees too; a worker among several, one.
    threads = (os.cpu_count() or 1) if use_threads else 1
    writer = pq.ParquetWriter(output, plan.output_schema, use_dictionary=plan.dictionary_columns)
    reject_writer: pq.ParquetWriter | None = None
    rows = scored = rejected = 0
    done = False
    try:
        for batch, consumed in _batches(plan, part, use_threads):
            if should_stop is not None and should_stop():
                raise ScoringStopped(f"partition {part.index} stopped: another partition failed")
            checked = _check_rows(plan, batch)
            keep = None
            if checked.invalid is not None:
                bad = np.flatnonzero(checked.invalid)
                if plan.on_invalid == "fail":
                    raise _broken_rows(plan, part, checked, rows, first_row)
                if rejects is None:
                    raise ValueError("reject mode needs a rejects path")
                table = _rejected_table(plan, batch, checked, rows)
                if reject_writer is None:
                    reject_writer = pq.ParquetWriter(rejects, plan.rejects_schema)
                reject_writer.write_table(table)
                rejected += len(bad)
                keep = pa.array(~checked.invalid)
            table = _scored_table(plan, model, checked, keep, rows, batch.num_rows, threads)
            if table.num_rows:
                writer.write_table(table)
            scored += table.num_rows
            rows += batch.num_rows
            if on_progress is not None:
                on_progress(rows, consumed)
        done = True
    finally:
        writer.close()
        if reject_writer is not None:
            reject_writer.close()
        if not done:
            output.unlink(missing_ok=True)
            if rejects is not None:
                rejects.unlink(missing_ok=True)
    return PartitionResult(part.index, rows, scored, rejected, output, rejects if rejected else None)
