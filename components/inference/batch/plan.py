"""Batch scoring's plan: the file checked before anything is written (readable, every column the
model needs, types that can hold the contract's), the row rules, the answer's schema, partitions."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from components.data.rows import Family, RowContract, compile_contract
from components.inference.scoring import InputError, ModelSchema

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


@dataclass(frozen=True)
class _FileLayout:
    """What the file's metadata (or a CSV's first block) says before any row is read."""

    arrow_schema: pa.Schema
    rows: int | None  # None: a CSV's row count is not known until it is read
    data_start: int
    data_stop: int
    block_bytes: int

    @property
    def types(self) -> dict[str, pa.DataType]:
        return {f.name: f.type for f in self.arrow_schema}


def _existing_format(input_path: Path) -> FileFormat:
    """The file's format, from its suffix, once it is known to exist."""
    fmt = file_format(input_path)
    if not input_path.is_file():
        raise InputError(f"input file not found: {input_path}")
    return fmt


def _inspect_file(input_path: Path, fmt: FileFormat, chunk_rows: int) -> _FileLayout:
    """A Parquet file's schema and row count, or a CSV's peeked types, data bounds and block size."""
    if fmt == "parquet":
        arrow_schema, total = _inspect_parquet(input_path)
        return _FileLayout(arrow_schema, total, 0, total, 0)
    arrow_schema, peek_rows, peek_bytes = _inspect_csv(input_path)
    row_bytes = peek_bytes / max(peek_rows, 1)
    block_bytes = int(min(max(row_bytes * chunk_rows, CSV_MIN_BLOCK_BYTES), CSV_MAX_BLOCK_BYTES))
    return _FileLayout(
        arrow_schema,
        None if peek_rows else 0,
        _csv_data_start(input_path),
        input_path.stat().st_size,
        block_bytes,
    )


def _check_columns(
    input_path: Path, columns: tuple[str, ...], schema: ModelSchema, id_column: str | None, rows: int | None
) -> None:
    """Refuse repeated names, a column the model needs or the id column missing, and a file without rows."""
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


def _check_added_columns(
    input_path: Path, columns: tuple[str, ...], id_column: str | None, on_invalid: OnInvalid
) -> None:
    """Refuse input columns named like those the output or the rejects file adds."""
    if on_invalid == "reject":
        clash = [c for c in (INPUT_ROW, REJECT_REASON) if c in columns]
        if clash:
            raise InvalidInput(
                f"{input_path} has column(s) {', '.join(clash)}, which the rejects file adds; rename them"
            )
    if id_column is None and INPUT_ROW in columns:
        raise InvalidInput(f"{input_path} has a column {INPUT_ROW!r}, which the output adds when there is no id column")


def _output_schema(model: Any, half_width: float | None, key: pa.Field) -> pa.Schema:
    """The answer file's columns: the row's key, the model's answers, the version and the time."""
    answers = answer_fields(model, half_width)
    clash = [f.name for f in answers if f.name in (key.name, "model_version", "scored_at")]
    if clash:
        raise InvalidInput(f"the output would hold column {clash[0]!r} twice; rename the id column")
    return pa.schema(
        [
            key,
            *answers,
            pa.field("model_version", pa.string()),
            pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def _rejects_schema(columns: tuple[str, ...], file_types: Mapping[str, pa.DataType]) -> pa.Schema:
    """The rejects file's columns: each row as read, its position and why it was set aside."""
    return pa.schema(
        [pa.field(c, file_types[c]) for c in columns]
        + [pa.field(INPUT_ROW, pa.int64()), pa.field(REJECT_REASON, pa.string())]
    )


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
    fmt = _existing_format(input_path)
    schema = schema or ModelSchema.of(model)
    layout = _inspect_file(input_path, fmt, chunk_rows)
    peek_types = layout.types
    columns = tuple(layout.arrow_schema.names)
    _check_columns(input_path, columns, schema, id_column, layout.rows)
    row_contract = compile_contract(suite, columns, required=schema.columns, target=target)
    used = list(dict.fromkeys([*schema.columns, *([id_column] if id_column else []), *row_contract.columns]))
    casts = _column_casts(input_path, fmt, used, peek_types, schema, row_contract, id_column)
    _check_added_columns(input_path, columns, id_column, on_invalid)
    read_columns = None if on_invalid == "reject" else tuple(c for c in columns if c in used)
    # Rejected rows keep their columns as read: a CSV's text as it was, a Parquet file's types.
    file_types = {c: pa.string() if fmt == "csv" else _value_type(peek_types[c]) for c in columns}
    if id_column is not None:
        key = pa.field(id_column, casts.get(id_column) or file_types[id_column])
    else:
        key = pa.field(INPUT_ROW, pa.int64())
    output_schema = _output_schema(model, half_width, key)
    rejects_schema = _rejects_schema(columns, file_types) if on_invalid == "reject" else None
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
        rows=layout.rows,
        data_start=layout.data_start,
        data_stop=layout.data_stop,
        csv_block_bytes=layout.block_bytes,
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
