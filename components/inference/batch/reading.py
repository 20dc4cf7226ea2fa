"""Batch scoring's reading: a partition's rows as Arrow record batches, from Parquet row groups or a
line-aligned byte range of a CSV."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from components.inference.batch.plan import (
    CSV_NULL_VALUES,
    InvalidInput,
    Partition,
    ScoringPlan,
)


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
