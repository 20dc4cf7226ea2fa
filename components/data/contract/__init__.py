"""The data contract: Great Expectations suites kept as reviewed JSON files, and validation.

GX 1.x has no profiler, so `profile_suite` derives a suite from reference data: column set
and order, types, null rates, numeric ranges and medians, category sets, id uniqueness.
The JSON file in `expectations/` is the source of truth; the GX file context under the
workspace only holds run state and Data Docs.

* `profiling`: which expectations each column of the reference gets, by its role;
* `expectations`: how each is derived, per column kind (types, nulls, numbers, value sets);
* `suites`: the suite files, read, written and narrowed;
* `validation`: the `Validator`, running a suite through GX on a batch;
* `report`: its outcome, each failure judged a break (the batch is refused) or drift;
* `review`: what accepting a fresh profile would change (`mlops expectations diff`).
"""

from __future__ import annotations

from components.data.contract.expectations import (
    BOOL_TYPES,
    DATETIME_TYPES,
    DECLARED,
    FLOAT_TYPES,
    INFERRED,
    INT_TYPES,
    LABEL_NULL_SHARE,
    MAX_DRIFT_FACTOR,
    MIN_DISTINCT_FOR_MEDIAN,
    NATURAL_REPEATS,
    NUMERIC_TYPES,
    OPEN_SET_SHARE,
    TEXT_TYPES,
    UNIT_IQRS,
    origin,
)
from components.data.contract.profiling import MAX_CATEGORIES, profile_from_config, profile_suite
from components.data.contract.report import DRIFT_CHECKS, DataRejected, Failure, ValidationReport
from components.data.contract.review import DIFF_SLACK, SuiteChange, diff_suites
from components.data.contract.suites import (
    ContractError,
    expected_columns,
    load_suite,
    save_suite,
    suite_path,
    without_column,
)
from components.data.contract.validation import Validator

__all__ = [
    "BOOL_TYPES",
    "DATETIME_TYPES",
    "DECLARED",
    "DIFF_SLACK",
    "DRIFT_CHECKS",
    "FLOAT_TYPES",
    "INFERRED",
    "INT_TYPES",
    "LABEL_NULL_SHARE",
    "MAX_CATEGORIES",
    "MAX_DRIFT_FACTOR",
    "MIN_DISTINCT_FOR_MEDIAN",
    "NATURAL_REPEATS",
    "NUMERIC_TYPES",
    "OPEN_SET_SHARE",
    "TEXT_TYPES",
    "UNIT_IQRS",
    "ContractError",
    "DataRejected",
    "Failure",
    "SuiteChange",
    "ValidationReport",
    "Validator",
    "diff_suites",
    "expected_columns",
    "load_suite",
    "origin",
    "profile_from_config",
    "profile_suite",
    "save_suite",
    "suite_path",
    "without_column",
]
