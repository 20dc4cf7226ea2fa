"""Extraction adapters: CSV, Parquet (files, folders, globs) and SQL through SQLAlchemy."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.core.errors import UserError
from components.core.secrets import redact, with_password

_URL = re.compile(r"^[a-zA-Z][\w+.-]*://")
TABULAR_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class ExtractionError(UserError, ValueError):
    """The source cannot be read as a table: missing, unsupported or unparseable.

    `transient` marks failures worth retrying (a database that did not answer), as opposed
    to ones that will fail again the same way (a missing file, a malformed CSV).
    """

    def __init__(self, message: str, *, transient: bool = False, path: Path | None = None):
        super().__init__(message)
        self.transient = transient
        self.path = path  # set when one file of the source cannot be parsed: that file is a bad batch


@dataclass(frozen=True)
class Batch:
    """One unit of arrival: a file of a file source, or the whole result of a SQL query.

    `frame` is None when the file could not be parsed; `error` then says why.
    """

    name: str
    path: Path | None
    frame: pd.DataFrame | None
    error: str | None = None


def is_database_url(source: str) -> bool:
    return bool(_URL.match(source)) and not source.startswith("file://")


def resolve_files(source: str) -> list[Path]:
    """The data files a file source names: one file, every CSV/Parquet in a folder, or a glob.

    In a folder, names starting with `_` or `.` are skipped (markers, answer keys, partial writes).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.suffix.lower() in TABULAR_SUFFIXES and p.is_file() and not p.name.startswith(("_", "."))
        )
        if not files:
            raise ExtractionError(f"no .csv or .parquet files in folder {path}")
    elif any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)))
        if not files:
            raise ExtractionError(f"no files match {source}")
    elif path.is_file():
        files = [path]
    else:
        raise ExtractionError(f"data source not found: {path}")
    unsupported = [p for p in files if p.suffix.lower() not in TABULAR_SUFFIXES]
    if unsupported:
        raise ExtractionError(
            f"unsupported file type {unsupported[0].suffix or '(none)'} for {unsupported[0]}; use .csv or .parquet"
        )
    return files


def read_file(path: Path) -> pd.DataFrame:
    """Read one CSV or Parquet file, turning parser failures into an ExtractionError."""
    kind = TABULAR_SUFFIXES.get(path.suffix.lower())
    try:
        if kind == "csv":
            return pd.read_csv(path)
        if kind == "parquet":
            return pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise ExtractionError(f"{path} is empty (no header, no rows)", path=path) from exc
    except FileNotFoundError as exc:
        raise ExtractionError(f"{path} disappeared while reading: {exc}", transient=True) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise ExtractionError(f"{path} is not a valid {kind} file: {exc}", path=path) from exc
    raise ExtractionError(f"unsupported file type {path.suffix or '(none)'} for {path}; use .csv or .parquet")


def read_sql(url: str, query: str) -> pd.DataFrame:
    """Run a query through SQLAlchemy and return the result as a frame."""
    import sqlalchemy

    shown = redact(url)
    try:
        engine = sqlalchemy.create_engine(with_password(url, os.environ))
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        raise ExtractionError(f"cannot connect to {shown}: {redact(str(exc))}") from exc
    try:
        connection = engine.connect()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise ExtractionError(f"cannot connect to {shown}: {redact(str(exc))}", transient=True) from exc
    try:
        with connection:
            return pd.read_sql_query(sqlalchemy.text(query), connection)
    except (sqlalchemy.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        raise ExtractionError(f"query failed on {shown}: {redact(str(exc))}") from exc
    finally:
        engine.dispose()


def read_batches(source: str, query: str | None = None) -> list[Batch]:
    """Every batch of the source, unparseable files included (with their error), in name order."""
    if is_database_url(source):
        if not query:
            raise ExtractionError(f"{source} is a database URL: give a SQL query too (data.query)")
        return [Batch(name="query", path=None, frame=read_sql(source, query))]
    batches = []
    for path in resolve_files(source):
        try:
            batches.append(Batch(name=path.name, path=path, frame=read_file(path)))
        except ExtractionError as exc:
            if exc.path is None:
                raise
            batches.append(Batch(name=path.name, path=path, frame=None, error=str(exc)))
    return batches


def combine(batches: list[Batch]) -> pd.DataFrame:
    """The readable batches as one frame; raises when their columns differ."""
    frames = [b.frame for b in batches if b.frame is not None]
    if not frames:
        raise ExtractionError("no readable batch to combine")
    if len(frames) == 1:
        return frames[0]
    columns = list(frames[0].columns)
    for batch in batches[1:]:
        if batch.frame is not None and list(batch.frame.columns) != columns:
            raise ExtractionError(
                f"{batch.name} has columns {list(batch.frame.columns)}, unlike the first batch's {columns}",
                path=batch.path,
            )
    return pd.concat(frames, ignore_index=True)


def extract_table(source: str, query: str | None = None) -> pd.DataFrame:
    """The whole source as one frame (batches in name order); any unreadable file is an error."""
    batches = read_batches(source, query)
    for batch in batches:
        if batch.frame is None:
            raise ExtractionError(batch.error or f"{batch.name} is unreadable", path=batch.path)
    return combine(batches)


def dataset_name_for(source: str) -> str:
    """A registry-safe dataset name derived from a source: file stem, folder name or table."""
    if is_database_url(source):
        stem = source.rsplit("/", 1)[-1].split("?", 1)[0] or "sql"
    else:
        path = Path(source.rstrip("/"))
        stem = path.parent.name if any(ch in path.name for ch in "*?[") else path.stem
    slug = re.sub(r"[^a-zA-Z0-9]+", "_", stem).strip("_").lower()
    return slug or "dataset"
