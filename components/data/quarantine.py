"""Screening batches against the contract, and keeping the rejected ones in quarantine.

A batch is one file of a file source (or the whole result of a SQL query). Rows first: rows
breaking a row rule of the contract (`components.data.rows`: an impossible value, a category never
seen, a null where none is allowed, an unknown label) are set aside, with their reasons, into
`<workspace>/quarantine/<dataset>/<stamp>-<batch>-rows/`, and the rest of the batch goes on; a
batch with more than `max_bad_row_share` of such rows is rejected whole. Then the batch-level
checks: the common case, every batch clean, costs one validation of the combined data. Only when
that fails are the batches screened one by one, to find which of them to quarantine: a rejected
batch is moved (or copied) with its validation report to `<workspace>/quarantine/<dataset>/<stamp>/`
and is never deleted. Failures of drift checks (values beyond the reference's range) do not reject:
the report calls the batch drift, and monitoring judges it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

from components.core.faults import fault_point
from components.core.files import write_text_atomic
from components.core.secrets import redact
from components.data.contract import Failure, ValidationReport, Validator
from components.data.extract import Batch
from components.data.rows import REASON, RowContract, compile_contract, split_rows

Validate = Callable[[pd.DataFrame], ValidationReport]


@dataclass(frozen=True)
class Rejection:
    batch: Batch
    report: ValidationReport


@dataclass(frozen=True)
class SetAside:
    """Rows of an accepted batch that broke a row rule, each with its reason (`set_aside_reason`)."""

    batch: Batch
    rows: pd.DataFrame = field(repr=False)

    def reasons(self) -> dict[str, int]:
        """How many rows broke each rule ("column: rule"), most first."""
        rules = self.rows[REASON].str.split("; ").explode().str.split(", got ").str[0]
        return {str(k): int(v) for k, v in rules.value_counts().items()}


@dataclass(frozen=True)
class Screening:
    """What the contract let through; `report` is the combined validation (with Data Docs)."""

    accepted: tuple[Batch, ...]
    rejected: tuple[Rejection, ...]
    report: ValidationReport
    frame: pd.DataFrame | None = field(default=None, repr=False)
    set_aside: tuple[SetAside, ...] = ()
    drifted: dict[str, str] = field(default_factory=dict)  # accepted batch -> why it was judged drift

    @property
    def rows_set_aside(self) -> int:
        return sum(len(s.rows) for s in self.set_aside)

    @property
    def judgement(self) -> str:
        """The combined report's judgement, or drift when a file drifted that the whole dilutes."""
        return "drift" if self.drifted and self.report.judgement == "clean" else self.report.judgement

    @property
    def why(self) -> str:
        if self.drifted and self.report.judgement == "clean":
            return f"{len(self.drifted)} batch(es) {next(iter(self.drifted.values()))}"
        return self.report.why

    @property
    def success(self) -> bool:
        return not self.rejected and self.report.success

    @property
    def docs_pages(self) -> list[Path]:
        """The Data Docs pages of the combined validation and of every rejection."""
        urls = {r.docs_url for r in (self.report, *(x.report for x in self.rejected)) if r.docs_url}
        pages = [Path(url2pathname(urlparse(url).path)) for url in sorted(urls)]
        return [page for page in pages if page.is_file()]

    def as_dict(self, source: str) -> dict[str, Any]:
        """The validation report, as written to the workspace's reports and printed by `--json`."""
        return {
            "source": redact(source),
            "accepted": [b.name for b in self.accepted],
            "rejected": [{"batch": r.batch.name, **r.report.as_dict()} for r in self.rejected],
            "report": self.report.as_dict(),
            "rows_set_aside": {a.batch.name: {"rows": len(a.rows), "reasons": a.reasons()} for a in self.set_aside},
        }


def write_validation_report(folder: Path, dataset: str, tag: str, payload: dict[str, Any]) -> Path:
    """The one place validation reports are written: `<folder>/validation_<dataset>_<tag>.json`."""
    return write_text_atomic(folder / f"validation_{dataset}_{tag}.json", json.dumps(payload, indent=2, default=str))


def unreadable_report(suite: str, batch: Batch) -> ValidationReport:
    """A file that cannot be parsed fails the contract before any expectation can run."""
    failure = Failure(expectation="readable_table", column=None, message=f"unreadable batch: {batch.error}")
    return ValidationReport(suite=suite, success=False, evaluated=1, failures=(failure,))


def _columns(batch: Batch) -> list[str]:
    assert batch.frame is not None
    return [str(c) for c in batch.frame.columns]


def _too_many_bad_rows(suite: str, set_aside: SetAside, rows: int, limit: float) -> ValidationReport:
    top = "; ".join(f"{rule} ({count})" for rule, count in list(set_aside.reasons().items())[:5])
    failure = Failure(
        expectation="rows_within_row_rules",
        column=None,
        message=f"{len(set_aside.rows)} of {rows} rows ({len(set_aside.rows) / max(rows, 1):.1%}) break row rules, "
        f"more than validation.max_bad_row_share ({limit:.1%}): {top}",
        observed=len(set_aside.rows),
    )
    return ValidationReport(suite=suite, success=False, evaluated=1, failures=(failure,))


def set_rows_aside(
    batches: Sequence[Batch], suite: str, row_contract: RowContract | None, max_bad_row_share: float
) -> tuple[list[Batch], list[SetAside], list[Rejection]]:
    """Each readable batch without its rows that break a row rule; a batch where more than
    `max_bad_row_share` of the rows do is rejected whole (with the rules they broke)."""
    kept: list[Batch] = []
    aside: list[SetAside] = []
    rejected: list[Rejection] = []
    for batch in batches:
        if batch.frame is None or row_contract is None or not row_contract.rules or batch.frame.empty:
            kept.append(batch)
            continue
        good, bad = split_rows(row_contract, batch.frame)
        if bad.empty:
            kept.append(batch)
            continue
        rest = replace(batch, frame=good)
        if len(bad) > max_bad_row_share * len(batch.frame):
            report = _too_many_bad_rows(suite, SetAside(batch, bad), len(batch.frame), max_bad_row_share)
            rejected.append(Rejection(batch, report))
            continue
        kept.append(rest)
        aside.append(SetAside(batch, bad))
    return kept, aside, rejected


def screen_batches(
    batches: Sequence[Batch],
    suite: str,
    validate: Validate,
    validate_quietly: Validate,
    trusted: Collection[str] = (),
    row_contract: RowContract | None = None,
    max_bad_row_share: float = 0.0,
) -> Screening:
    """Set rows aside, validate the batches one by one, then together; reject the ones that break the contract.

    0. Rows breaking a row rule of `row_contract` are set aside (`set_rows_aside`); a batch with too
       many of them is rejected.
    1. A file that cannot be parsed is rejected.
    2. With several batches, each is validated on its own (`validate_quietly`, no docs), so a unit
       change or a null-rate jump in one batch is not diluted by the others. Batches named in
       `trusted` (accepted before, unchanged, under the same suite) skip this step.
    3. The survivors are validated together by `validate` (the checkpoint that updates Data Docs),
       which catches what only shows across batches, such as a batch of copies of earlier rows. When
       that fails, batches are added in order and each one whose addition breaks the contract is
       rejected.

    Every rejection is validated again through `validate`, so Data Docs show its failed expectations.
    """
    batches, aside, too_bad = set_rows_aside(batches, suite, row_contract, max_bad_row_share)
    readable = [b for b in batches if b.frame is not None]
    each = _screen_each(readable, trusted, validate, validate_quietly)
    unreadable = [Rejection(b, unreadable_report(suite, b)) for b in batches if b.frame is None]
    rejected = [*too_bad, *unreadable, *each.rejected]
    survivors, drifted = each.accepted, dict(each.drifted)
    if not survivors:
        return Screening(accepted=(), rejected=tuple(rejected), report=rejected[0].report)
    combined: ValidationReport | None = None
    frame = _together(survivors)
    if frame is not None:
        combined = validate(frame)
        if len(survivors) == 1 and combined.success and combined.judgement == "drift":
            drifted[survivors[0].name] = combined.why
        if combined.success:
            return Screening(
                drifted=drifted,
                accepted=tuple(survivors),
                rejected=tuple(rejected),
                report=combined,
                frame=frame,
                set_aside=_of(aside, survivors),
            )
        if len(survivors) == 1:
            rejected.append(Rejection(survivors[0], combined))
            return Screening(accepted=(), rejected=tuple(rejected), report=combined)
    ordered = _add_in_order(survivors, suite, validate, validate_quietly)
    rejected += ordered.rejected
    names = {b.name for b in ordered.accepted}
    return Screening(
        accepted=tuple(ordered.accepted),
        rejected=tuple(rejected),
        report=combined or rejected[0].report,
        set_aside=_of(aside, ordered.accepted),
        drifted={name: why for name, why in drifted.items() if name in names},
    )


def _together(batches: list[Batch]) -> pd.DataFrame | None:
    """The batches' rows in one frame, or None when their columns differ."""
    if not all(_columns(b) == _columns(batches[0]) for b in batches):
        return None
    frames = [b.frame for b in batches]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class _Sorted:
    """Batches accepted so far, those rejected, and the drift an accepted batch showed on its own."""

    accepted: list[Batch]
    rejected: list[Rejection]
    drifted: dict[str, str] = field(default_factory=dict)


def _screen_each(
    readable: list[Batch], trusted: Collection[str], validate: Validate, validate_quietly: Validate
) -> _Sorted:
    """Step 2 of `screen_batches`: with several batches, validate each on its own unless trusted."""
    if len(readable) <= 1:
        return _Sorted(readable, [])
    survivors: list[Batch] = []
    rejected: list[Rejection] = []
    drifted: dict[str, str] = {}
    for batch in readable:
        report = None if batch.name in trusted else validate_quietly(batch.frame)  # type: ignore[arg-type]
        if report is not None and report.success and report.judgement == "drift":
            drifted[batch.name] = report.why
        if report is None or report.success:
            survivors.append(batch)
        else:  # validate it again through the checkpoint, so Data Docs show why it was rejected
            rejected.append(Rejection(batch, validate(batch.frame)))  # type: ignore[arg-type]
    return _Sorted(survivors, rejected, drifted)


def _add_in_order(survivors: list[Batch], suite: str, validate: Validate, validate_quietly: Validate) -> _Sorted:
    """Step 3 of `screen_batches` when the batches fail together: add them in order, rejecting each
    one whose addition breaks the contract."""
    accepted: list[Batch] = []
    rejected: list[Rejection] = []
    for batch in survivors:
        assert batch.frame is not None
        if accepted and _columns(batch) != _columns(accepted[0]):
            failure = Failure(
                expectation="same_columns_as_other_batches",
                column=None,
                message=f"columns {_columns(batch)} differ from {accepted[0].name}'s {_columns(accepted[0])}",
            )
            rejected.append(Rejection(batch, ValidationReport(suite, False, 1, (failure,))))
            continue
        frame = pd.concat([*(b.frame for b in accepted), batch.frame], ignore_index=True) if accepted else batch.frame
        report = validate_quietly(frame)
        if report.success:
            accepted.append(batch)
        else:
            rejected.append(Rejection(batch, validate(frame)))
    return _Sorted(accepted, rejected)


def _of(aside: Sequence[SetAside], accepted: Sequence[Batch]) -> tuple[SetAside, ...]:
    """The rows set aside from batches that were accepted (a rejected batch is quarantined whole)."""
    names = {b.name for b in accepted}
    return tuple(s for s in aside if s.batch.name in names)


def screen_with(
    validator: Validator,
    batches: Sequence[Batch],
    suite: dict[str, Any],
    *,
    run_name: str | None = None,
    trusted: Collection[str] = (),
    max_bad_row_share: float = 0.0,
    target: str | None = None,
) -> Screening:
    """`screen_batches` through one GX validator: checkpoints with Data Docs, direct checks without.

    Row rules are the suite's, on every column of the batches (the target's too)."""
    columns = sorted({str(c) for b in batches if b.frame is not None for c in b.frame.columns})
    return screen_batches(
        batches,
        suite["name"],
        validate=lambda frame: validator.validate(frame, suite, run_name=run_name),
        validate_quietly=lambda frame: validator.validate(frame, suite, data_docs=False),
        trusted=trusted,
        row_contract=compile_contract(suite, columns, target=target, with_target=True),
        max_bad_row_share=max_bad_row_share,
    )


def _batch_keys(batches: Sequence[Batch], suite: dict[str, Any]) -> dict[str, str]:
    """Batch name -> a key of (file path, size, mtime, suite); batches without a file have none."""
    suite_digest = hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()
    keys = {}
    for batch in batches:
        if batch.path is None or not batch.path.exists():
            continue
        stat = batch.path.stat()
        identity = json.dumps([str(batch.path.resolve()), stat.st_size, stat.st_mtime_ns, suite_digest])
        keys[batch.name] = hashlib.sha256(identity.encode()).hexdigest()
    return keys


def _read_ledger(ledger: Path) -> set[str]:
    try:
        return set(json.loads(ledger.read_text()))
    except (OSError, ValueError):
        return set()


def trusted_batches(ledger: Path, batches: Sequence[Batch], suite: dict[str, Any]) -> set[str]:
    """Names of batches this suite accepted before, unchanged since (same path, size and mtime)."""
    known = _read_ledger(ledger)
    return {name for name, key in _batch_keys(batches, suite).items() if key in known}


def remember_accepted(ledger: Path, batches: Sequence[Batch], suite: dict[str, Any]) -> None:
    """Record accepted file batches so later runs validate only what is new or changed."""
    known = _read_ledger(ledger) | set(_batch_keys(batches, suite).values())
    write_text_atomic(ledger, json.dumps(sorted(known)))


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def quarantine(
    root: Path,
    dataset: str,
    rejection: Rejection,
    *,
    source: str,
    mode: Literal["move", "copy"] = "move",
    context: dict[str, Any] | None = None,
) -> Path:
    """Put a rejected batch and its report in a new quarantine folder; returns the folder.

    Files are moved (or copied); a batch without a file (a SQL result) is written as Parquet.
    The report goes next to it first, so an interrupted move never leaves a batch unexplained.
    """
    folder = root / dataset / f"{_stamp()}-{rejection.batch.name}"
    folder.mkdir(parents=True, exist_ok=False)
    report = rejection.report.as_dict()
    write_text_atomic(folder / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    batch = rejection.batch
    manifest: dict[str, Any] = {
        "dataset": dataset,
        "source": redact(source),
        "batch": batch.name,
        "original_path": str(batch.path) if batch.path else None,
        "quarantined_at": datetime.now(UTC).isoformat(),
        "mode": mode if batch.path else "written",
        "reasons": [f["message"] for f in report["failed_expectations"]],
        **(context or {}),
    }
    write_text_atomic(folder / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    fault_point("quarantining")  # report and manifest written, the batch not yet moved
    if batch.path is not None:
        target = folder / batch.path.name
        if mode == "move":
            shutil.move(str(batch.path), target)
        else:
            shutil.copy2(batch.path, target)
    elif batch.frame is not None:
        batch.frame.to_parquet(folder / "rows.parquet", index=False)
    return folder


def quarantine_rows(
    root: Path, dataset: str, set_aside: SetAside, *, source: str, context: dict[str, Any] | None = None
) -> Path:
    """Write the rows set aside from an accepted batch, each with its reason, to a new quarantine
    folder (`rows.csv` and a manifest counting the rules they broke); returns the folder."""
    folder = root / dataset / f"{_stamp()}-{set_aside.batch.name}-rows"
    folder.mkdir(parents=True, exist_ok=False)
    manifest: dict[str, Any] = {
        "dataset": dataset,
        "source": redact(source),
        "batch": set_aside.batch.name,
        "original_path": str(set_aside.batch.path) if set_aside.batch.path else None,
        "quarantined_at": datetime.now(UTC).isoformat(),
        "mode": "rows",
        "rows": len(set_aside.rows),
        "reasons": set_aside.reasons(),
        **(context or {}),
    }
    write_text_atomic(folder / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    set_aside.rows.to_csv(folder / "rows.csv", index=True, index_label="batch_row")
    return folder
