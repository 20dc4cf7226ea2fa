"""Review: what accepting a fresh profile instead of the committed suite would change."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from components.data.contract.report import format_value

# `mlops expectations diff` ignores bounds that widen by less than this share of their width.
DIFF_SLACK = 0.05


@dataclass(frozen=True)
class SuiteChange:
    """One difference between the committed suite and a profile of fresh data."""

    kind: str  # "added", "removed" or "changed"
    expectation: str
    column: str | None
    detail: str


def _key(expectation: dict[str, Any]) -> tuple[str, str | None, str | None]:
    kwargs = expectation.get("kwargs", {})
    return expectation["type"], kwargs.get("column"), (expectation.get("meta") or {}).get("check")


def _describe_kwargs(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if isinstance(before, list) and isinstance(after, list):
            added = [v for v in after if v not in before]
            removed = [v for v in before if v not in after]
            if added:
                parts.append(f"{name}: new {added}")
            if removed:
                parts.append(f"{name}: no longer seen {removed}")
            if not added and not removed:
                parts.append(f"{name}: order {before} -> {after}")
        else:
            parts.append(f"{name}: {format_value(before)} -> {format_value(after)}")
    return "; ".join(parts)


def _matters(kind: str, before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Fresh data always moves bounds a little: report only what the current suite would not admit."""
    if kind == "expect_table_row_count_to_be_between":
        return False  # derived from the sample's size, not from the data's meaning
    if kind.endswith("_to_be_between"):
        low, high = before.get("min_value"), before.get("max_value")
        new_low, new_high = after.get("min_value"), after.get("max_value")
        slack = DIFF_SLACK * (high - low) if low is not None and high is not None else 0.0
        below = low is not None and new_low is not None and new_low < low - slack
        above = high is not None and new_high is not None and new_high > high + slack
        return below or above
    if kind == "expect_column_values_to_not_be_null":
        return float(after.get("mostly", 1.0)) < float(before.get("mostly", 1.0)) - DIFF_SLACK / 5
    return True


def diff_suites(current: dict[str, Any], fresh: dict[str, Any]) -> list[SuiteChange]:
    """What accepting `fresh` (a profile of new data) instead of `current` would change."""
    old = {_key(e): e for e in current["expectations"]}
    new = {_key(e): e for e in fresh["expectations"]}
    changes = []
    for key in old.keys() | new.keys():
        kind, column, _ = key
        if key not in new:
            changes.append(SuiteChange("removed", kind, column, "no longer derived from the fresh data"))
        elif key not in old:
            changes.append(SuiteChange("added", kind, column, json.dumps(new[key]["kwargs"], default=str)[:300]))
        else:
            strip = {"column", "batch_id"}
            before = {k: v for k, v in old[key].get("kwargs", {}).items() if k not in strip}
            after = {k: v for k, v in new[key].get("kwargs", {}).items() if k not in strip}
            median = (new[key].get("meta") or {}).get("observed")
            if kind == "expect_column_median_to_be_between" and median is not None:
                # A median check is about the median: report it when the fresh one leaves the committed range.
                low, high = before.get("min_value"), before.get("max_value")
                if (low is not None and median < low) or (high is not None and median > high):
                    detail = f"median {format_value(median)} outside [{format_value(low)}, {format_value(high)}]"
                    changes.append(SuiteChange("changed", kind, column, detail))
            elif before != after and _matters(kind, before, after):
                changes.append(SuiteChange("changed", kind, column, _describe_kwargs(before, after)))
    order = {"expect_table_columns_to_match_ordered_list": 0, "expect_column_to_exist": 1}
    changes.sort(key=lambda c: (order.get(c.expectation, 2), c.column or "", c.expectation, c.kind))
    return changes
