"""One prediction path for online serving and batch scoring, so their answers never differ."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class InputError(ValueError):
    """Rows cannot be scored: missing columns or values of the wrong type."""


@dataclass(frozen=True)
class ModelSchema:
    """The columns a fitted pipeline expects, split by kind."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @classmethod
    def of(cls, model: Any) -> ModelSchema:
        """Read the column kinds from the pipeline's fitted ColumnTransformer."""
        preprocess = model.named_steps["preprocess"]
        kinds: dict[str, tuple[str, ...]] = {}
        for name, _, columns in preprocess.transformers_:
            if name in ("numeric", "categorical"):
                kinds[name] = tuple(columns)
        return cls(kinds.get("numeric", ()), kinds.get("categorical", ()))


def coerce_rows(frame: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame:
    """The model's columns, in order, with numbers as float and categories as objects.

    Raises InputError naming every missing column and every value that is not a number.
    """
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise InputError(f"missing column(s): {', '.join(missing)}")
    out = pd.DataFrame(index=frame.index)
    problems = []
    for column in schema.numeric:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
            converted = pd.to_numeric(values.where(values.notna(), np.nan), errors="coerce")
            bad = converted.isna() & values.notna()
            if pd.api.types.is_bool_dtype(values.dtype) or bad.any():
                example = values[bad].iloc[0] if bad.any() else values.iloc[0]
                problems.append(f"{column} must be a number, got {example!r}")
                continue
            values = converted
        out[column] = values.astype("float64")
    for column in schema.categorical:
        values = frame[column]
        if values.dtype == object:
            nested = values.map(lambda v: isinstance(v, (dict, list, tuple, set)))
            if nested.any():
                problems.append(f"{column} must be a single value, got {values[nested].iloc[0]!r}")
                continue
        out[column] = values.astype(object).where(values.notna(), None)
    if problems:
        raise InputError("; ".join(problems))
    return out


@dataclass(frozen=True)
class Predictions:
    labels: list[Any]
    probabilities: list[float]
    classes: list[Any]


def _plain_labels(values: np.ndarray) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def predict_frame(model: Any, frame: pd.DataFrame, schema: ModelSchema | None = None) -> Predictions:
    """Predicted labels and probabilities.

    The probability is that of the positive class (the second of two classes) for binary
    targets, and that of the predicted class for multiclass targets.
    """
    schema = schema or ModelSchema.of(model)
    X = coerce_rows(frame, schema)
    proba = model.predict_proba(X)
    classes = np.asarray(model.classes_)
    winner = proba.argmax(axis=1)
    labels = classes[winner]
    scores = proba[:, 1] if len(classes) == 2 else proba[np.arange(len(proba)), winner]
    return Predictions(_plain_labels(labels), [float(p) for p in scores], _plain_labels(classes))


def predict_records(model: Any, rows: Sequence[Mapping[str, Any]], schema: ModelSchema | None = None) -> Predictions:
    """Score JSON-like rows (a list of column -> value mappings)."""
    if not rows:
        raise InputError("no rows to score")
    return predict_frame(model, pd.DataFrame.from_records(list(rows)), schema)


def iter_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Read a CSV or Parquet file in chunks so memory stays bounded whatever its size."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
    elif suffix == ".csv":
        yield from pd.read_csv(path, chunksize=chunk_rows)
    else:
        raise InputError(f"cannot score {path}: use a .csv or .parquet file")


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    output: Path


def score_file(
    model: Any,
    input_path: Path,
    output_path: Path,
    *,
    model_version: str,
    id_column: str | None = None,
    chunk_rows: int = 100_000,
) -> ScoreSummary:
    """Score a file chunk by chunk into Parquet, written under a temporary name then renamed."""
    if not input_path.is_file():
        raise InputError(f"input file not found: {input_path}")
    schema = ModelSchema.of(model)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.partial")
    writer: pq.ParquetWriter | None = None
    rows = 0
    scored_at = pd.Timestamp.now(tz="UTC").to_pydatetime()
    try:
        for chunk in iter_chunks(input_path, chunk_rows):
            if id_column and id_column not in chunk.columns:
                raise InputError(f"id column {id_column!r} is not in {input_path}")
            predictions = predict_frame(model, chunk, schema)
            out = pd.DataFrame(
                {
                    **({id_column: chunk[id_column].to_numpy()} if id_column else {}),
                    "prediction": predictions.labels,
                    "probability": predictions.probabilities,
                    "model_version": model_version,
                }
            )
            table = pa.Table.from_pandas(out, preserve_index=False).append_column(
                "scored_at", pa.array([scored_at] * len(out), type=pa.timestamp("us", tz="UTC"))
            )
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            # CSV chunks can infer different types (an int id with a gap reads as float).
            writer.write_table(table.cast(writer.schema))
            rows += len(out)
        if writer is None:
            raise InputError(f"{input_path} has no rows to score")
        writer.close()
        writer = None
        tmp.replace(output_path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return ScoreSummary(rows=rows, output=output_path)
