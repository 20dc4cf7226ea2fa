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

from components.inference.batch.output import (
    ScoreSummary,
    assemble,
    part_paths,
    score_file,
    scratch_dir,
)
from components.inference.batch.partition import (
    PartitionResult,
    ProgressCallback,
    score_partition,
)
from components.inference.batch.plan import (
    CSV_MAX_BLOCK_BYTES,
    CSV_MIN_BLOCK_BYTES,
    CSV_NULL_VALUES,
    CSV_PEEK_BYTES,
    CSV_SUFFIXES,
    ERROR_EXAMPLES,
    INPUT_ROW,
    OUTPUT_DICTIONARY_COLUMNS,
    PARQUET_SUFFIXES,
    REJECT_REASON,
    InvalidInput,
    InvalidRows,
    Partition,
    ScoringPlan,
    ScoringStopped,
    answer_fields,
    check_paths,
    default_rejects_path,
    file_format,
    plan_scoring,
    split_partitions,
)
from components.inference.batch.workers import (
    load_model_dir,
    rows_per_second,
)

__all__ = [
    "CSV_MAX_BLOCK_BYTES",
    "CSV_MIN_BLOCK_BYTES",
    "CSV_NULL_VALUES",
    "CSV_PEEK_BYTES",
    "CSV_SUFFIXES",
    "ERROR_EXAMPLES",
    "INPUT_ROW",
    "OUTPUT_DICTIONARY_COLUMNS",
    "PARQUET_SUFFIXES",
    "REJECT_REASON",
    "InvalidInput",
    "InvalidRows",
    "Partition",
    "PartitionResult",
    "ProgressCallback",
    "ScoreSummary",
    "ScoringPlan",
    "ScoringStopped",
    "answer_fields",
    "assemble",
    "check_paths",
    "default_rejects_path",
    "file_format",
    "load_model_dir",
    "part_paths",
    "plan_scoring",
    "rows_per_second",
    "score_file",
    "score_partition",
    "scratch_dir",
    "split_partitions",
]
