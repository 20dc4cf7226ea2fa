"""Batch scoring: a CSV or Parquet file streamed through the data contract and the model into Parquet.

Memory is bounded by the chunk size whatever the file size (a Parquet row group is decoded at most
once at a time). Rows go through the same `predict_frame` as the online service, so batch and online
answers never differ.

The contract is the training suite (`expectations/<dataset>.json`), applied the way scoring can:

* file-level, before anything is written: the file must be readable, hold every column the model
  needs (and the id column), and no column may have a type that cannot hold the contract's type
  (text where the contract has numbers, numbers where it has categories, ...);
* row-level, vectorised per chunk: expectations on column values without `mostly`
  (`..._to_not_be_null`, `..._to_be_between` with `strict_min`/`strict_max`, `..._to_be_in_set`,
  `..._to_not_be_in_set`) and values that cannot be read as the contract's type (text in a numeric
  column). A row that breaks one fails the job (`on_invalid="fail"`) or goes to the rejects file
  with its reason (`on_invalid="reject"`);
* not evaluated: expectations with `mostly`, medians, row counts and uniqueness describe a whole
  batch, not a row; distribution shift in scoring data is left to monitoring. Expectations on the
  target (absent when scoring) and on columns the file lacks and the model does not need (a time
  column) are skipped too; `RowContract.skipped` lists each with why.

A file is scored in partitions (row ranges of a Parquet file, line-aligned byte ranges of a CSV) that
each write their own part files; `assemble` joins them in input order under a temporary name and
renames the result, so a crash never leaves a half file that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import math
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from components.core.files import staged
from components.data.rows import Family, RowContract, as_floats, compile_contract, find_problems
from components.inference.scoring import InputError, ModelSchema, predict_frame
from components.modeling.prepare import MISSING_TOKENS, numbers_from_text

OnInvalid = Literal["fail", "reject"]
FileFormat = Literal["parquet", "csv"]

INPUT_ROW = "input_row"  # a row's position in the input file, 0 for the first data row
REJECT_REASON = "reject_reason"
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
# pandas' default missing-value strings: a CSV is scored with the missing values training read it with.
CSV_NULL_VALUES = [
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]
CSV_PEEK_BYTES = 1 << 20
CSV_MIN_BLOCK_BYTES = 1 << 16
CSV_MAX_BLOCK_BYTES = 1 << 28
ERROR_EXAMPLES = 3
# Dictionary encoding only where values repeat: trying it on ids and probabilities (all distinct)
# made writing the output twice as slow, and the file larger.
OUTPUT_DICTIONARY_COLUMNS = ["prediction", "model_version", "scored_at"]


class InvalidInput(InputError):
    """The file cannot be scored: unreadable, a needed column missing, or a column of the wrong type."""


class InvalidRows(InvalidInput):
    """Rows break the contract and `on_invalid` is `fail`."""


class ScoringStopped(RuntimeError):
    """Another partition failed, so this one stopped early."""


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ScoringPlan:
    """Everything a partition needs to score its rows; small and picklable, sent to Dask workers."""

    input_path: Path
    format: FileFormat
    columns: tuple[str, ...]  # the file's columns, in order
    read_columns: tuple[str, ...] | None  # None: every column (reject mode keeps whole rows)
    casts: Mapping[str, pa.DataType | None]  # typed view of each used column (None: as read)
    schema: ModelSchema
    contract: RowContract
    id_column: str | None
    output_schema: pa.Schema
    rejects_schema: pa.Schema | None  # None in fail mode
    on_invalid: OnInvalid
    chunk_rows: int
    rows: int | None  # known up front for Parquet
    data_start: int  # Parquet: 0; CSV: the byte after the header
    data_stop: int  # Parquet: the row count; CSV: the file size
    csv_block_bytes: int
    model_version: str
    scored_at: datetime
    half_width: float | None = None  # regression: the interval prediction ± half_width

    @property
    def dictionary_columns(self) -> list[str]:
        """Output columns whose values repeat (a class, the version, the time): dictionary-encoded."""
        numbers = pa.types.is_floating(self.output_schema.field("prediction").type)
        return [c for c in OUTPUT_DICTIONARY_COLUMNS if not (numbers and c == "prediction")]

    @property
    def progress_unit(self) -> Literal["rows", "bytes"]:
        return "rows" if self.format == "parquet" else "bytes"

    @property
    def progress_total(self) -> int:
        return self.data_stop - self.data_start


@dataclass(frozen=True)
class Partition:
    """Rows [start, stop) of a Parquet file, or the lines starting in bytes [start, stop) of a CSV."""

    index: int
    start: int
    stop: int


def file_format(path: Path) -> FileFormat:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise InputError(f"cannot score {path}: use a .csv or .parquet file")


def default_rejects_path(output_path: Path) -> Path:
    return output_path.with_name(f"{output_path.stem}.rejects.parquet")


def check_paths(input_path: Path, output_path: Path, rejects_path: Path | None = None) -> None:
    """Refuse path mix-ups before anything is read: scoring must never overwrite its own input."""
    if not input_path.is_file():
        raise InputError(f"input file not found: {input_path}")
    file_format(input_path)
    if output_path.suffix.lower() not in PARQUET_SUFFIXES:
        raise InputError(f"the output is Parquet: name it *.parquet, not {output_path.name}")
    targets = [output_path] + ([rejects_path] if rejects_path else [])
    for target in targets:
        if target.resolve() == input_path.resolve():
            raise InputError(f"{target} is the input file; write the scores elsewhere")
    if rejects_path is not None and rejects_path.resolve() == output_path.resolve():
        raise InputError("the rejects file and the output must be different files")


def _is_stringlike(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype))


def _value_type(dtype: pa.DataType) -> pa.DataType:
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def _holds(dtype: pa.DataType, family: Family) -> bool:
    """Whether a column of this Arrow type can hold values of the suite's type family."""
    dtype = _value_type(dtype)
    if pa.types.is_null(dtype):
        return True
    if family == "numeric":  # numbers as text are parsed per row; a value that is not a number is a row problem
        return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)) or (
            _is_stringlike(dtype)
        )
    if family == "text":
        return _is_stringlike(dtype)
    if family == "boolean":
        return bool(pa.types.is_boolean(dtype)) or _is_stringlike(dtype)
    return bool(pa.types.is_timestamp(dtype) or pa.types.is_date(dtype)) or _is_stringlike(dtype)


def _is_nested(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_nested(dtype) or pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype))


def _inspect_parquet(path: Path) -> tuple[pa.Schema, int]:
    try:
        parquet = pq.ParquetFile(path)
        return parquet.schema_arrow, parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"cannot read {path} as Parquet: {exc}") from exc


def _inspect_csv(path: Path) -> tuple[pa.Schema, int, int]:
    """The columns with the types of the first block, the number of rows in it, and the bytes it spans."""
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=CSV_PEEK_BYTES),
            convert_options=pacsv.ConvertOptions(null_values=CSV_NULL_VALUES, strings_can_be_null=True),
        )
        schema = reader.schema
        try:
            first = reader.read_next_batch()
        except StopIteration:
            first = None
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path} as CSV: {exc}") from exc
    rows = first.num_rows if first is not None else 0
    return schema, rows, min(path.stat().st_size, CSV_PEEK_BYTES)


def _csv_data_start(path: Path) -> int:
    with path.open("rb") as handle:
        handle.readline()
        return handle.tell()


def answer_fields(model: Any, half_width: float | None = None) -> list[pa.Field]:
    """The output columns a model's answers fill: prediction and probability (binary); plus every
    class's probability (multiclass); or the predicted number and its interval (regression)."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        interval = [pa.field("lower", pa.float64()), pa.field("upper", pa.float64())] if half_width is not None else []
        return [pa.field("prediction", pa.float64()), *interval]
    fields = [
        pa.field("prediction", pa.array(np.asarray(classes).tolist()).type),
        pa.field("probability", pa.float64()),
    ]
    if len(classes) > 2:
        fields += [pa.field(f"probability_{c}", pa.float64()) for c in np.asarray(classes).tolist()]
    return fields


def _column_casts(
    source: Path,
    fmt: FileFormat,
    used: Sequence[str],
    types: Mapping[str, pa.DataType],
    schema: ModelSchema,
    row_contract: RowContract,
    id_column: str | None,
) -> dict[str, pa.DataType | None]:
    """The type each used column is read as (None: as stored); raises InvalidInput for a Parquet column
    whose type cannot hold the contract's or the model's values."""
    casts: dict[str, pa.DataType | None] = {}
    problems = []
    for column in used:
        family = "numeric" if column in schema.numeric else row_contract.families.get(column)
        dtype = types[column]
        if fmt == "parquet":
            if column in schema.categorical and _is_nested(_value_type(dtype)):
                problems.append(f"{column!r} holds {dtype} values, the model needs one value per row")
            elif family is not None and not _holds(dtype, family):
                problems.append(f"{column!r} is {dtype}, which cannot hold the contract's {family} values")
            casts[column] = pa.float64() if family == "numeric" and column != id_column else None
        # A CSV is read as text and parsed here, so a column's type cannot drift between chunks.
        elif column == id_column and pa.types.is_integer(dtype) and family in (None, "numeric"):
            casts[column] = pa.int64()  # the first block's integers: later ones must be integers too
        elif family == "numeric" or (column == id_column and pa.types.is_floating(dtype)):
            casts[column] = pa.float64()
        elif family == "boolean":
            casts[column] = pa.bool_()
        else:
            casts[column] = None
    if problems:
        suite_name = f" (suite {row_contract.suite!r})" if row_contract.suite else ""
        raise InvalidInput(f"{source}: {'; '.join(problems)}{suite_name}")
    return casts


def plan_scoring(
    input_path: Path,
    model: Any,
    *,
    model_version: str,
    suite: Mapping[str, Any] | None = None,
    id_column: str | None = None,
    target: str | None = None,
    on_invalid: OnInvalid = "fail",
    chunk_rows: int = 100_000,
    scored_at: datetime | None = None,
    schema: ModelSchema | None = None,
    half_width: float | None = None,
) -> ScoringPlan:
    """Read the file's metadata (or a CSV's first block) and refuse what cannot be scored as a whole.

    Raises InvalidInput for an unreadable file, a missing model or id column, a column whose type
    cannot hold the contract's, or a file without rows; nothing has been written at that point.
    """
    fmt = file_format(input_path)
    if not input_path.is_file():
        raise InputError(f"input file not found: {input_path}")
    schema = schema or ModelSchema.of(model)
    if fmt == "parquet":
        arrow_schema, total = _inspect_parquet(input_path)
        rows: int | None = total
        data_start, data_stop, block_bytes = 0, total, 0
        peek_types = {f.name: f.type for f in arrow_schema}
    else:
        arrow_schema, peek_rows, peek_bytes = _inspect_csv(input_path)
        rows = None if peek_rows else 0
        data_start, data_stop = _csv_data_start(input_path), input_path.stat().st_size
        row_bytes = peek_bytes / max(peek_rows, 1)
        block_bytes = int(min(max(row_bytes * chunk_rows, CSV_MIN_BLOCK_BYTES), CSV_MAX_BLOCK_BYTES))
        peek_types = {f.name: f.type for f in arrow_schema}
    columns = tuple(arrow_schema.names)
    if len(set(columns)) != len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise InvalidInput(f"{input_path} repeats column name(s) {', '.join(repeated)}")
    missing = [c for c in schema.columns if c not in columns]
    if missing:
        raise InvalidInput(
            f"{input_path} lacks column(s) the model needs: {', '.join(missing)} (it needs {', '.join(schema.columns)})"
        )
    if id_column is not None and id_column not in columns:
        raise InvalidInput(
            f"id column {id_column!r} is not in {input_path}; pass --id-column with one of its columns: "
            f"{', '.join(columns)}"
        )
    if rows == 0:
        raise InvalidInput(f"{input_path} has no rows to score")
    row_contract = compile_contract(suite, columns, required=schema.columns, target=target)
    used = list(dict.fromkeys([*schema.columns, *([id_column] if id_column else []), *row_contract.columns]))
    casts = _column_casts(input_path, fmt, used, peek_types, schema, row_contract, id_column)
    if on_invalid == "reject":
        clash = [c for c in (INPUT_ROW, REJECT_REASON) if c in columns]
        if clash:
            raise InvalidInput(
                f"{input_path} has column(s) {', '.join(clash)}, which the rejects file adds; rename them"
            )
    if id_column is None and INPUT_ROW in columns:
        raise InvalidInput(f"{input_path} has a column {INPUT_ROW!r}, which the output adds when there is no id column")
    read_columns = None if on_invalid == "reject" else tuple(c for c in columns if c in used)
    # Rejected rows keep their columns as read: a CSV's text as it was, a Parquet file's types.
    file_types = {c: pa.string() if fmt == "csv" else _value_type(peek_types[c]) for c in columns}
    if id_column is not None:
        id_type = casts.get(id_column) or file_types[id_column]
        key = pa.field(id_column, id_type)
    else:
        key = pa.field(INPUT_ROW, pa.int64())
    answers = answer_fields(model, half_width)
    clash = [f.name for f in answers if f.name in (key.name, "model_version", "scored_at")]
    if clash:
        raise InvalidInput(f"the output would hold column {clash[0]!r} twice; rename the id column")
    output_schema = pa.schema(
        [
            key,
            *answers,
            pa.field("model_version", pa.string()),
            pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    rejects_schema = None
    if on_invalid == "reject":
        rejects_schema = pa.schema(
            [pa.field(c, file_types[c]) for c in columns]
            + [pa.field(INPUT_ROW, pa.int64()), pa.field(REJECT_REASON, pa.string())]
        )
    return ScoringPlan(
        input_path=input_path,
        format=fmt,
        columns=columns,
        read_columns=read_columns,
        casts=casts,
        schema=schema,
        contract=row_contract,
        id_column=id_column,
        output_schema=output_schema,
        rejects_schema=rejects_schema,
        on_invalid=on_invalid,
        chunk_rows=chunk_rows,
        rows=rows,
        data_start=data_start,
        data_stop=data_stop,
        csv_block_bytes=block_bytes,
        model_version=str(model_version),
        scored_at=scored_at or datetime.now(UTC),
        half_width=half_width,
    )


def split_partitions(plan: ScoringPlan, count: int) -> list[Partition]:
    """At most `count` partitions of about equal size, none smaller than a chunk; CSV bounds at line starts."""
    span = plan.data_stop - plan.data_start
    unit = plan.chunk_rows if plan.format == "parquet" else plan.csv_block_bytes
    count = max(1, min(count, span // max(unit, 1)))
    bounds = [plan.data_start + round(k * span / count) for k in range(count)] + [plan.data_stop]
    if plan.format == "csv" and count > 1:
        with plan.input_path.open("rb") as handle:
            for k in range(1, count):
                handle.seek(bounds[k] - 1)
                handle.readline()  # the partition starts at the first line that starts at or after its bound
                bounds[k] = min(handle.tell(), plan.data_stop)
    edges = sorted(set(bounds))
    return [Partition(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(edges))]


# ----------------------------------------------------------------------------- reading


class _ByteRange(io.RawIOBase):
    """Bytes [start, stop) of a file, counting what has been read (CSV progress)."""

    def __init__(self, path: Path, start: int, stop: int):
        self._file = path.open("rb")
        self._file.seek(start)
        self._left = stop - start
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self._left)
        if size <= 0:
            return 0
        got = self._file.readinto(memoryview(buffer)[:size]) or 0
        self._left -= got
        self.consumed += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


def _parquet_batches(plan: ScoringPlan, part: Partition, use_threads: bool) -> Iterator[tuple[pa.RecordBatch, int]]:
    parquet = pq.ParquetFile(plan.input_path)
    offset = 0
    columns = list(plan.read_columns) if plan.read_columns is not None else None
    for group in range(parquet.num_row_groups):
        low = offset
        offset += parquet.metadata.row_group(group).num_rows
        if offset <= part.start or low >= part.stop:
            continue
        position = low
        for batch in parquet.iter_batches(
            batch_size=plan.chunk_rows, row_groups=[group], columns=columns, use_threads=use_threads
        ):
            first, position = position, position + batch.num_rows
            start, stop = max(first, part.start), min(position, part.stop)
            if start < stop:
                yield batch.slice(start - first, stop - start), 0
            if position >= part.stop:
                return


def _csv_batches(plan: ScoringPlan, part: Partition, use_threads: bool) -> Iterator[tuple[pa.RecordBatch, int]]:
    with _ByteRange(plan.input_path, part.start, part.stop) as source:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=list(plan.columns), block_size=plan.csv_block_bytes, use_threads=use_threads
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in plan.columns},
                null_values=CSV_NULL_VALUES,
                strings_can_be_null=True,
                include_columns=list(plan.read_columns) if plan.read_columns is not None else None,
            ),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise InvalidInput(f"cannot parse {plan.input_path}: {exc}") from exc
            if batch.num_rows:
                yield batch, source.consumed


def _batches(plan: ScoringPlan, part: Partition, use_threads: bool) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Chunks of the partition with the bytes read so far (CSV) or 0 (Parquet)."""
    if part.stop <= part.start:
        return iter(())
    if plan.format == "parquet":
        return _parquet_batches(plan, part, use_threads)
    return _csv_batches(plan, part, use_threads)


# ----------------------------------------------------------------------------- checking rows


def _fallback_cast(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast value by value (vectorised in pandas): what cannot be read becomes null and is flagged."""
    raw = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
    present = raw.notna().to_numpy()
    if pa.types.is_boolean(target):
        words = raw.astype(str).str.strip().str.lower()
        mapped = words.map({"true": True, "false": False, "1": True, "0": False})
        bad = present & mapped.isna().to_numpy()
        return pa.array(mapped.where(~bad & present, None).tolist(), type=target), bad
    # Text that stands for a missing number ('?', 'n/a') is missing, as in training; '1,234' is a number.
    present = present & ~raw.astype(str).str.strip().str.lower().isin(MISSING_TOKENS).to_numpy()
    numbers = numbers_from_text(raw.where(present, None), force=True)
    assert numbers is not None
    floats = numbers.to_numpy(dtype="float64", na_value=np.nan)
    bad = present & np.isnan(floats)
    if pa.types.is_integer(target):
        fractional = ~np.isnan(floats) & (np.mod(floats, 1) != 0)
        bad |= fractional
        floats = np.where(fractional, np.nan, floats)
    return pa.array(floats, from_pandas=True).cast(target, safe=False), bad


def _typed(values: pa.Array, target: pa.DataType | None) -> tuple[pa.Array, np.ndarray | None]:
    """The column as `target` and a mask of the values that are not of that type (None: all are)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if target is None or values.type == target:
        return values, None
    if not (_is_stringlike(values.type) or pa.types.is_null(values.type)):
        return pc.cast(values, target, safe=False), None
    try:
        return pc.cast(values, target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _fallback_cast(values, target)


@dataclass(frozen=True)
class _Checked:
    arrays: dict[str, pa.Array]  # typed view of each used column
    invalid: np.ndarray | None  # rows breaking the contract (None: none do)
    reasons: list[str]  # one per invalid row, in row order


def _type_problem(target: pa.DataType | None) -> str:
    if target is not None and pa.types.is_integer(target):
        return "not an integer"
    if target is not None and pa.types.is_boolean(target):
        return "not true/false"
    return "not a number"


def _check_rows(plan: ScoringPlan, batch: pa.RecordBatch) -> _Checked:
    arrays: dict[str, pa.Array] = {}
    problems: list[tuple[np.ndarray, str, pa.Array | None]] = []
    unreadable: dict[str, np.ndarray] = {}
    for column, target in plan.casts.items():
        raw = batch.column(column)
        typed, bad = _typed(raw, target)
        arrays[column] = typed
        if bad is not None and bad.any():
            unreadable[column] = bad
            problems.append((bad, f"{column}: {_type_problem(target)}", raw))
    check = find_problems(plan.contract.rules, arrays, problems, unreadable)
    return _Checked(arrays, check.invalid, check.reasons)


# ----------------------------------------------------------------------------- scoring a partition


@dataclass(frozen=True)
class PartitionResult:
    index: int
    rows: int  # input rows read
    scored: int
    rejected: int
    output: Path
    rejects: Path | None  # None when the partition rejected nothing


ProgressCallback = Callable[[int, int], None]  # (rows done, bytes done) in this partition


def _frame(plan: ScoringPlan, arrays: Mapping[str, pa.Array], keep: pa.Array | None) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for column in plan.schema.columns:
        values = arrays[column] if keep is None else arrays[column].filter(keep)
        data[column] = as_floats(values) if column in plan.schema.numeric else values.to_pandas()
    return pd.DataFrame(data)


def _scored_table(
    plan: ScoringPlan, model: Any, checked: _Checked, keep: pa.Array | None, first_row: int, rows: int
) -> pa.Table:
    frame = _frame(plan, checked.arrays, keep)
    n = len(frame)
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
    answer = predict_frame(model, frame, plan.schema, plan.half_width) if n else None
    columns["prediction"] = pa.array(answer.labels if answer else [], type=fields.field("prediction").type)
    if "probability" in fields.names:
        columns["probability"] = pa.array(answer.probabilities, type=pa.float64()) if answer else empty
    if answer is not None and answer.class_probabilities is not None:
        matrix = np.asarray(answer.class_probabilities, dtype="float64")
        for position, label in enumerate(answer.classes):
            columns[f"probability_{label}"] = pa.array(matrix[:, position])
    if "lower" in fields.names:
        columns["lower"] = pa.array(answer.lower, type=pa.float64()) if answer and answer.lower else empty
        columns["upper"] = pa.array(answer.upper, type=pa.float64()) if answer and answer.upper else empty
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


def score_partition(
    model: Any,
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
                    examples = "; ".join(
                        f"{_where(plan, part, rows + int(r), first_row)}: {checked.reasons[i]}"
                        for i, r in enumerate(bad[:ERROR_EXAMPLES])
                    )
                    more = f" (and {len(bad) - ERROR_EXAMPLES} more in this chunk)" if len(bad) > ERROR_EXAMPLES else ""
                    raise InvalidRows(
                        f"{plan.input_path}: rows break the contract (suite {plan.contract.suite!r}): "
                        f"{examples}{more}; nothing was written. Fix the data, or score the valid rows and "
                        "set the others aside with --on-invalid reject (scoring.on_invalid: reject)"
                    )
                if rejects is None:
                    raise ValueError("reject mode needs a rejects path")
                table = _rejected_table(plan, batch, checked, rows)
                if reject_writer is None:
                    reject_writer = pq.ParquetWriter(rejects, plan.rejects_schema)
                reject_writer.write_table(table)
                rejected += len(bad)
                keep = pa.array(~checked.invalid)
            table = _scored_table(plan, model, checked, keep, rows, batch.num_rows)
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


# ----------------------------------------------------------------------------- assembling


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
    """Plan, score every partition in this process, and assemble: the scoring flow without Prefect."""
    if on_invalid == "reject" and rejects_path is None:
        rejects_path = default_rejects_path(output_path)
    check_paths(input_path, output_path, rejects_path)
    plan = plan_scoring(
        input_path,
        model,
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
            results.append(score_partition(model, plan, part, out, rejected, first_row=before))
        return assemble(plan, results, output_path, rejects_path)


# ----------------------------------------------------------------------------- models on workers

_MODELS: dict[str, tuple[Any, ModelSchema]] = {}
_MODELS_LOCK = threading.Lock()


def load_model_dir(model_dir: Path) -> tuple[Any, ModelSchema]:
    """A downloaded model folder, loaded once per process (each Dask worker loads it once)."""
    from components.tracking.registry import load_model

    key = str(Path(model_dir).resolve())
    with _MODELS_LOCK:
        if key not in _MODELS:
            model = load_model(key)
            _MODELS[key] = (model, ModelSchema.of(model))
        return _MODELS[key]


def rows_per_second(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else math.inf
