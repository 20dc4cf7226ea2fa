"""Suite files: the reviewed JSON in `expectations/`, read, written and narrowed."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.core.errors import UserError
from components.core.files import write_text_atomic


class ContractError(UserError, ValueError):
    """A suite file is missing, unreadable or not a valid GX suite."""


def save_suite(suite: dict[str, Any], path: Path) -> Path:
    return write_text_atomic(path, json.dumps(suite, indent=2, sort_keys=False) + "\n")


def load_suite(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ContractError(f"no expectation suite at {path}")
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list) or "name" not in suite:
        raise ContractError(f"{path} is not a GX suite: it needs 'name' and a list of 'expectations'")
    return suite


def suite_path(suite_dir: Path, dataset: str) -> Path:
    return suite_dir / f"{dataset}.json"


def without_column(suite: dict[str, Any], column: str) -> dict[str, Any]:
    """The suite for data that lacks `column` (new rows before their labels): its expectations dropped,
    and the column taken out of the table's column list."""
    expectations = []
    for expectation in suite["expectations"]:
        kwargs = expectation.get("kwargs") or {}
        if kwargs.get("column") == column:
            continue
        if expectation["type"] in ("expect_table_columns_to_match_ordered_list", "expect_table_columns_to_match_set"):
            expectation = copy.deepcopy(expectation)
            expectation["kwargs"]["column_list"] = [c for c in kwargs.get("column_list", []) if c != column]
        expectations.append(expectation)
    return {**suite, "expectations": expectations}


def expected_columns(suite: dict[str, Any]) -> Sequence[str]:
    for expectation in suite["expectations"]:
        if expectation["type"] == "expect_table_columns_to_match_ordered_list":
            return list(expectation["kwargs"]["column_list"])
    return []
