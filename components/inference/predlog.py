"""The prediction log: every answered request's inputs and outputs, as Parquet files.

Layout: ``<workspace>/predictions/<model>/date=YYYY-MM-DD/<time>-<pid>-<seq>.parquet``, one file
per flush, so writers in several server processes never share a file and a reader never sees a
half-written one (files are written under a dot-name, then renamed). Each row is one scored input
row: its feature columns under their own names, plus the columns in `LOG_COLUMNS`: `_prediction` is
the class as text (with its `_probability`), or a regression model's number (`_probability` null).

Writing happens on a background thread: `PredictionLog.append` only queues a frame, so a
request never waits for the disk. The thread turns what was queued into Arrow every
`CONVERT_SECONDS`, in small pieces, and writes a file every `flush_seconds`: converting a whole
flush at once held the GIL in bursts that stalled a busy service's requests. When the disk
falls behind by more than `max_pending_rows`, new rows are dropped and counted rather than
delaying answers or exhausting memory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.core.files import staged

logger = logging.getLogger(__name__)

REQUEST_ID = "_request_id"
LOGGED_AT = "_logged_at"
MODEL_VERSION = "_model_version"
PREDICTION = "_prediction"
PROBABILITY = "_probability"
LOG_COLUMNS = (REQUEST_ID, LOGGED_AT, MODEL_VERSION, PREDICTION, PROBABILITY)
# During a rollout, the answer of the other version (the challenger in shadow; in canary, the one
# that did not answer), computed off the response path and logged on the same row.
SHADOW_VERSION = "_shadow_version"
SHADOW_PREDICTION = "_shadow_prediction"
SHADOW_PROBABILITY = "_shadow_probability"
SHADOW_COLUMNS = (SHADOW_VERSION, SHADOW_PREDICTION, SHADOW_PROBABILITY)


@dataclass(frozen=True)
class LogStats:
    written_rows: int
    written_files: int
    dropped_rows: int
    pending_rows: int
    last_error: str | None


def log_frame(
    features: pd.DataFrame,
    request_ids: Sequence[str],
    model_version: str,
    labels: Sequence[Any],
    probabilities: Sequence[float],
    at: datetime | None = None,
) -> pd.DataFrame:
    """The log rows of one scored batch: features plus request id, time, version and answer."""
    rows = len(features)
    columns: dict[str, Any] = {name: features[name].to_numpy() for name in features.columns}
    columns[REQUEST_ID] = np.asarray(request_ids, dtype=object)
    logged_at = pd.Timestamp(at or datetime.now(UTC)).tz_convert("UTC").tz_localize(None)
    columns[LOGGED_AT] = np.full(rows, np.datetime64(logged_at, "us"))
    columns[MODEL_VERSION] = np.full(rows, str(model_version), dtype=object)
    columns[PREDICTION], columns[PROBABILITY] = answer_columns(labels, probabilities, rows)
    # One construction, object columns kept as objects (pandas 3 would infer Arrow strings):
    # this runs on the prediction thread for every batch.
    frame = pd.DataFrame({k: pd.Series(v, dtype=v.dtype, copy=False) for k, v in columns.items()})
    frame[LOGGED_AT] = frame[LOGGED_AT].dt.tz_localize("UTC")
    return frame


# Queued rows become Arrow this often, so the conversion's CPU is spread evenly instead of arriving
# in one burst per file: with 5-second bursts (7,500 rows, ~75 ms of GIL-bound work interleaved with
# the requests) a service at concurrency 32 had p99 75 ms against a p50 of 21 ms (37 ms with the log
# off); converted every quarter second: p99 47 ms against 21-25 ms.
CONVERT_SECONDS = 0.25


class PredictionLog:
    """Appends log frames to Parquet files from a background thread."""

    def __init__(
        self,
        directory: Path,
        *,
        flush_seconds: float = 5.0,
        flush_rows: int = 50_000,
        max_pending_rows: int = 1_000_000,
    ) -> None:
        self.directory = directory
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.max_pending_rows = max_pending_rows
        self._pending: list[Any] = []
        self._pending_rows = 0  # queued or converted, not yet written
        self._converted: list[pa.Table] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._written_rows = 0
        self._written_files = 0
        self._dropped_rows = 0
        self._sequence = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, frame: pd.DataFrame) -> None:
        """Queue log rows (see `log_frame`) for writing; never blocks on I/O."""
        self._enqueue(len(frame), frame)

    def append_batch(
        self,
        features: pd.DataFrame | Mapping[str, np.ndarray],
        request_ids: Sequence[str],
        model_version: str | Sequence[str],
        labels: Sequence[Any],
        probabilities: Sequence[float],
        extra: Mapping[str, Sequence[Any]] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Queue one scored batch; the log rows are built on the writer thread, not the caller's.

        `features` (a frame, or each column's values under its name) must not be modified afterwards
        (the service builds new arrays per batch).
        """
        at = at or datetime.now(UTC)
        item = (features, request_ids, model_version, labels, probabilities, extra, at)
        self._enqueue(len(request_ids), item)

    def _enqueue(self, rows: int, item: Any) -> None:
        if rows == 0 or self._stopped.is_set():
            return
        with self._lock:
            if self._pending_rows + rows > self.max_pending_rows:
                self._dropped_rows += rows
                if self._dropped_rows == rows:
                    logger.warning("prediction log is %d rows behind; dropping rows", self._pending_rows)
                return
            self._pending.append(item)
            self._pending_rows += rows
            full = self._pending_rows >= self.flush_rows
        if full:
            self._wake.set()

    def stats(self) -> LogStats:
        with self._lock:
            return LogStats(
                self._written_rows, self._written_files, self._dropped_rows, self._pending_rows, self._last_error
            )

    def flush(self) -> None:
        """Write whatever is queued now (on the caller's thread)."""
        self._convert()
        self._write_converted()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread and write what is left."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout)
        self.flush()

    def _loop(self) -> None:
        last_write = time.monotonic()
        while not self._stopped.is_set():
            self._wake.wait(min(self.flush_seconds, CONVERT_SECONDS))
            self._wake.clear()
            try:
                self._convert()
                with self._lock:
                    full = self._pending_rows >= self.flush_rows
                if full or time.monotonic() - last_write >= self.flush_seconds:
                    last_write = time.monotonic()
                    self._write_converted()
            except Exception as exc:
                logger.exception("prediction log write failed")
                with self._lock:
                    self._last_error = f"{type(exc).__name__}: {exc}"

    def _convert(self) -> None:
        """Queued items to Arrow tables, kept until the next write."""
        with self._lock:
            items, self._pending = self._pending, []
        if not items:
            return
        tables = self._tables(items)
        with self._lock:
            self._converted.extend(tables)

    def _tables(self, items: list[Any]) -> list[pa.Table]:
        try:
            return [_items_table(items)]
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            if len(items) > 1:  # one bad item loses only itself
                return [table for item in items for table in self._tables([item])]
            rows = _item_rows(items[0])
            logger.warning("prediction log: %d row(s) dropped, not writable: %s", rows, exc)
            with self._lock:
                self._dropped_rows += rows
                self._pending_rows -= rows
                self._last_error = f"{type(exc).__name__}: {exc}"
            return []

    def _write_converted(self) -> None:
        with self._lock:
            tables, self._converted = self._converted, []
        if not tables:
            return
        table = _joined(tables)
        now = datetime.now(UTC)
        folder = self.directory / f"date={now:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        name = f"{now:%H%M%S%f}-{os.getpid()}-{sequence:06d}.parquet"
        try:
            with staged(folder / name) as staging:
                pq.write_table(table, staging)
        except BaseException:
            with self._lock:
                self._dropped_rows += table.num_rows
                self._pending_rows -= table.num_rows
            raise
        with self._lock:
            self._written_rows += table.num_rows
            self._pending_rows -= table.num_rows
            self._written_files += 1
            self._last_error = None


def _item_rows(item: Any) -> int:
    return len(item) if isinstance(item, pd.DataFrame) else len(item[1])


def _arrow(values: np.ndarray, kind: pa.DataType | None = None) -> pa.Array:
    """One log column; values Arrow cannot hold as one type (a string among an id column's
    integers, an integer beyond 64 bits) are logged as text rather than failing the flush."""
    try:
        return pa.array(values, type=kind, from_pandas=True)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        if kind is not None:
            raise
        return pa.array([None if _missing(v) else str(v) for v in values], type=pa.string())


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA or value is pd.NaT


def _frame_table(frame: pd.DataFrame) -> pa.Table:
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        kinds = {LOGGED_AT: pa.timestamp("us", tz="UTC")}
        return pa.table({name: _arrow(frame[name].to_numpy(), kinds.get(name)) for name in frame.columns})


def _items_table(items: list[Any]) -> pa.Table:
    """One Arrow table of queued items: frames from `append`, batches from `append_batch`.

    Batches with the same columns are joined column by column in NumPy and converted once:
    building a pandas frame per batch cost the writer thread about 1 ms each, a tenth of a
    busy server's CPU.
    """
    tables: list[pa.Table] = []
    run: list[Any] = []  # consecutive items of one kind (and, for batches, the same columns)

    def close_run() -> None:
        if not run:
            return
        if isinstance(run[0], pd.DataFrame):
            frame = pd.concat(run, ignore_index=True) if len(run) > 1 else run[0]
            tables.append(_frame_table(frame))
        else:
            tables.append(_batches_table(run))
        run.clear()

    for item in items:
        if run and (
            isinstance(item, pd.DataFrame) != isinstance(run[0], pd.DataFrame)
            or (not isinstance(item, pd.DataFrame) and _batch_names(item) != _batch_names(run[0]))
        ):
            close_run()
        run.append(item)
    close_run()
    return _joined(tables)


def _joined(tables: list[pa.Table]) -> pa.Table:
    """One table of several: a column all-null in one part and not in another promotes to the other
    type; one that is text in one part and numbers in another is text."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowException, TypeError):
        return pa.concat_tables([_as_text(t) for t in tables], promote_options="default")


def _as_text(table: pa.Table) -> pa.Table:
    """Feature columns as text (the log's own columns keep their types)."""
    columns = {
        name: column if name in LOG_COLUMNS or pa.types.is_null(column.type) else column.cast(pa.string())
        for name, column in zip(table.column_names, table.columns, strict=True)
    }
    return pa.table(columns)


def _batch_names(item: tuple[Any, ...]) -> tuple[str, ...]:
    features, extra = item[0], item[5]
    return (*_feature_names(features), *(extra or {}))


def _feature_names(features: pd.DataFrame | Mapping[str, np.ndarray]) -> list[str]:
    return list(features.columns) if isinstance(features, pd.DataFrame) else list(features)


def _batches_table(batches: list[tuple[Any, ...]]) -> pa.Table:
    parts: dict[str, list[np.ndarray]] = {name: [] for name in (*_batch_names(batches[0]), *LOG_COLUMNS)}
    for features, request_ids, model_version, labels, probabilities, extra, at in batches:
        rows = len(request_ids)
        for name in _feature_names(features):
            values = features[name]
            parts[name].append(values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values))
        for name, values in (extra or {}).items():
            parts[name].append(np.asarray(values, dtype=object))
        parts[REQUEST_ID].append(np.asarray(request_ids, dtype=object))
        logged_at = pd.Timestamp(at).tz_convert("UTC").tz_localize(None)
        parts[LOGGED_AT].append(np.full(rows, np.datetime64(logged_at, "us")))
        versions = [model_version] * rows if isinstance(model_version, str) else model_version  # one per row
        parts[MODEL_VERSION].append(np.asarray([str(v) for v in versions], dtype=object))
        predicted, probability = answer_columns(labels, probabilities, rows)
        parts[PREDICTION].append(predicted)
        parts[PROBABILITY].append(probability)
    arrays = {}
    for name, chunks in parts.items():
        values = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        kind = pa.timestamp("us", tz="UTC") if name == LOGGED_AT else None
        # from_pandas: NaN and None are nulls, as pa.Table.from_pandas wrote them.
        arrays[name] = _arrow(values, kind)
    return pa.table(arrays)


def answer_columns(labels: Sequence[Any], probabilities: Sequence[float], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes as text with their probability; a regression model's numbers as numbers (no probability)."""
    if not len(probabilities):
        return np.asarray(labels, dtype="float64"), np.full(rows, np.nan)
    return np.asarray([str(label) for label in labels], dtype=object), np.asarray(probabilities, dtype="float64")


def log_files(directory: Path, since: datetime | None = None) -> list[Path]:
    """The finished log files under `directory`, oldest first (optionally from a day on)."""
    files = []
    for folder in sorted(directory.glob("date=*")):
        if since is not None and folder.name.removeprefix("date=") < f"{since:%Y-%m-%d}":
            continue
        files.extend(sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")))
    return files


def read_prediction_log(directory: Path, since: datetime | None = None) -> pd.DataFrame:
    """All logged rows (optionally from a time on), oldest first; empty when nothing was logged."""
    files = log_files(directory, since)
    frames = []
    for path in files:
        try:
            frames.append(pd.read_parquet(path))
        except (OSError, pa.ArrowException, ValueError) as exc:  # a truncated or foreign file: skip it
            logger.warning("prediction log: skipping unreadable %s: %s", path, exc)
    if not frames:
        return pd.DataFrame(columns=list(LOG_COLUMNS))
    frame = pd.concat(frames, ignore_index=True)
    if since is not None:
        frame = frame[frame[LOGGED_AT] >= pd.Timestamp(since)]
    return frame.sort_values(LOGGED_AT, kind="stable").reset_index(drop=True)


def answers_of(frame: pd.DataFrame, version: str) -> pd.DataFrame:
    """The log rows with `version`'s answers in `_prediction` / `_probability`: during a canary some
    rows were answered by the other version, and `version`'s answer is in the shadow columns.
    Rows `version` did not score keep what was served."""
    if SHADOW_VERSION not in frame.columns or not len(frame):
        return frame
    other = (frame[MODEL_VERSION].astype(str) != str(version)) & (frame[SHADOW_VERSION].astype(str) == str(version))
    if not other.any():
        return frame
    frame = frame.copy()
    for served, shadow in ((MODEL_VERSION, SHADOW_VERSION), (PREDICTION, SHADOW_PREDICTION)):
        frame[served] = frame[served].astype(object)
        frame.loc[other, served] = frame.loc[other, shadow].astype(object)
    frame.loc[other, PROBABILITY] = pd.to_numeric(frame.loc[other, SHADOW_PROBABILITY], errors="coerce")
    return frame
