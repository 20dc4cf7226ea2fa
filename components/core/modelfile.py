"""A new model from a data file: what its columns mean, and its reviewable `models/<name>.yaml`.

`propose_model` reads the task from the target (`tasks.infer_task`), finds an id column (an id-like
name, or row numbers, with a different value in every row) and a time column (typed dates, or text
that reads as dates), and suggests slices (categorical columns with a few well-filled values).
`render_model_file` writes it all as commented YAML for people to review in git.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from components.core.secrets import PASSWORD_VARIABLE, has_password, without_password
from components.modeling.prepare import infer_feature_spec, looks_like_dates
from components.modeling.tasks import TaskInference, infer_task

ID_NAME = re.compile(r"(^|[_\s.-])(id|uuid|guid|key)$|^(id|uuid|guid)([_\s.-]|$)|[a-z](Id|ID)$", re.IGNORECASE)
ROW_NUMBER_NAMES = {"", "index", "unnamed: 0", "row", "row_id", "rownum", "row_number"}
SLICE_MAX_VALUES = 12
SLICE_MIN_SHARE = 0.05
MAX_SLICES = 3


@dataclass(frozen=True)
class Role:
    """A column chosen for a role (or none), and why."""

    column: str | None
    reason: str


@dataclass(frozen=True)
class Proposal:
    """What `mlops init` inferred about a new model's data."""

    name: str
    source: str
    target: str
    task: TaskInference
    id_column: Role
    time_column: Role
    rows: int
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    left_out: dict[str, str] = field(default_factory=dict)
    slices: tuple[str, ...] = ()


def _unique(values: pd.Series) -> bool:
    return bool(values.notna().all() and values.is_unique)


def detect_id_column(frame: pd.DataFrame, target: str) -> Role:
    """An id-like name with a different value in every row, or a column of row numbers."""
    candidates = [c for c in frame.columns if c != target]
    for column in candidates:
        values = frame[column]
        if ID_NAME.search(str(column)) and _unique(values) and not pd.api.types.is_float_dtype(values.dtype):
            return Role(str(column), "id-like name, a different value in every row")
    for column in candidates:
        values = frame[column]
        if (
            pd.api.types.is_integer_dtype(values.dtype)
            and _unique(values)
            and len(values) > 1
            and values.is_monotonic_increasing
            and int(values.iloc[-1]) - int(values.iloc[0]) == len(values) - 1
            and (str(column).strip().lower() in ROW_NUMBER_NAMES or str(column).startswith("Unnamed"))
        ):
            return Role(str(column), "row numbers (consecutive, increasing)")
    return Role(None, "none found (no id-like column with a different value in every row)")


def detect_time_column(frame: pd.DataFrame, target: str, id_column: str | None) -> Role:
    """The first column of dates or times, typed or as text."""
    for column in frame.columns:
        if column in (target, id_column):
            continue
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            return Role(str(column), "dates/times")
        textual = values.dtype == object or pd.api.types.is_string_dtype(values.dtype)
        if textual and looks_like_dates(values):
            return Role(str(column), "text that reads as dates/times")
    return Role(None, "none found")


def suggest_slices(frame: pd.DataFrame, categorical: tuple[str, ...]) -> tuple[str, ...]:
    """Categorical columns with a few values, each on at least `SLICE_MIN_SHARE` of the rows."""
    found = []
    for column in categorical:
        shares = frame[column].value_counts(normalize=True, dropna=True)
        if 2 <= len(shares) <= SLICE_MAX_VALUES and float(shares.min()) >= SLICE_MIN_SHARE:
            found.append(column)
    return tuple(found[:MAX_SLICES])


def propose_model(
    frame: pd.DataFrame,
    name: str,
    source: str,
    target: str,
    *,
    task: Any = None,
    id_column: str | None = None,
    time_column: str | None = None,
) -> Proposal:
    """Infer a new model's task and column roles from its data (given roles are kept as they are)."""
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} is not in the data; its columns are {list(frame.columns)}")
    for role, column in (("id", id_column), ("time", time_column)):
        if column is not None and column not in frame.columns:
            raise ValueError(f"{role} column {column!r} is not in the data; its columns are {list(frame.columns)}")
    inference = infer_task(frame[target], task)
    id_role = Role(id_column, "given") if id_column else detect_id_column(frame, target)
    time_role = Role(time_column, "given") if time_column else detect_time_column(frame, target, id_role.column)
    spec = infer_feature_spec(frame, target, id_role.column, time_role.column)
    return Proposal(
        name=name,
        source=source,
        target=target,
        task=inference,
        id_column=id_role,
        time_column=time_role,
        rows=len(frame),
        numeric=spec.numeric,
        categorical=spec.categorical,
        left_out=dict(spec.notes),
        slices=suggest_slices(frame, spec.categorical),
    )


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    text = str(value)
    return text if re.fullmatch(r"[A-Za-z0-9_./-]+", text) and text not in ("null", "true", "false") else repr(text)


def render_model_file(proposal: Proposal, metric: str, suite_path: str) -> str:
    """The model's settings as commented YAML, layered over the project's mlops.yaml."""
    task = proposal.task
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    slices = ", ".join(_scalar(s) for s in proposal.slices)
    by_time = proposal.time_column.column is not None
    settings: list[tuple[str, str]] = [
        (f"task: {task.task}", f"inferred: {task.reason}"),
        ("data:", ""),
        (
            f"  source: {_scalar(without_password(proposal.source))}",
            f"the password comes from {PASSWORD_VARIABLE}" if has_password(proposal.source) else "",
        ),
        (f"  target: {_scalar(proposal.target)}", task.summary),
        (f"  id_column: {_scalar(proposal.id_column.column)}", proposal.id_column.reason),
        (f"  time_column: {_scalar(proposal.time_column.column)}", proposal.time_column.reason),
        ("assumptions: []", "what one row is, when its label is known, what a missing value means"),
        ("split:", ""),
        (
            f"  strategy: {'time' if by_time else 'random'}",
            "the newest rows are held out for the gate" if by_time else "",
        ),
        ("evaluation:", ""),
        (f"  slices: [{slices}]", "each value scored on its own and gated" if slices else "columns scored per value"),
        ("promotion:", ""),
        (f"  metric: {metric}", f"the {task.task} default; min_score and floors set absolute limits"),
        ("# monitoring:", ""),
        (f'#   labels: "{{home}}/labels/{proposal.name}"', "where labels of served rows arrive (id + target)"),
        ("# deploy:", ""),
        ('#   training: {cron: "0 3 * * 1"}', "this model's own schedules and triggers"),
    ]
    width = max(len(line) for line, _ in settings) + 2
    lines = [
        f"# Model {proposal.name!r}: written by `mlops init` from {without_password(proposal.source)} "
        f"({proposal.rows:,} rows) on {stamp}.",
        "# Review it and commit it. These settings are layered over the project's mlops.yaml (any of its",
        "# sections can be set here for this model alone); its data contract is " + suite_path + ".",
        *(f"{line:<{width}}# {comment}" if comment else line for line, comment in settings),
    ]
    return "\n".join(lines) + "\n"
