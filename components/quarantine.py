"""Screening batches against the contract, and keeping the rejected ones in quarantine.

A batch is one file of a file source (or the whole result of a SQL query). The common case,
every batch clean, costs one validation of the combined data. Only when that fails are the
batches screened one by one, to find which of them to quarantine: a rejected batch is moved
(or copied) with its validation report to `<workspace>/quarantine/<dataset>/<stamp>/` and is
never deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

from components.contract import Failure, ValidationReport, Validator
from components.extract import Batch
from components.files import write_text_atomic

Validate = Callable[[pd.DataFrame], ValidationReport]


@dataclass(frozen=True)
class Rejection:
    batch: Batch
    report: ValidationReport


@dataclass(frozen=True)
class Screening:
    """What the contract let through; `report` is the combined validation (with Data Docs)."""

    accepted: tuple[Batch, ...]
    rejected: tuple[Rejection, ...]
    report: ValidationReport
    frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def success(self) -> bool:
        return not self.rejected and self.report.success

    @property
    def docs_pages(self) -> list[Path]:
        """The Data Docs pages of the combined validation and of every rejection."""
        urls = {r.docs_url for r in (self.report, *(x.report for x in self.rejected)) if r.docs_url}
        pages = [Path(url2pathname(urlparse(url).path)) for url in sorted(urls)]
        return [page for page in pages if page.is_file()]


def unreadable_report(suite: str, batch: Batch) -> ValidationReport:
    """A file that cannot be parsed fails the contract before any expectation can run."""
    failure = Failure(expectation="readable_table", column=None, message=f"unreadable batch: {batch.error}")
    return ValidationReport(suite=suite, success=False, evaluated=1, failures=(failure,))


def _columns(batch: Batch) -> list[str]:
    assert batch.frame is not None
    return [str(c) for c in batch.frame.columns]


def screen_batches(
    batches: Sequence[Batch],
    suite: str,
    validate: Validate,
    validate_quietly: Validate,
    trusted: Collection[str] = (),
) -> Screening:
    """Validate the batches one by one, then together; reject the ones that break the contract.

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
    rejected = [Rejection(b, unreadable_report(suite, b)) for b in batches if b.frame is None]
    readable = [b for b in batches if b.frame is not None]
    survivors: list[Batch] = []
    if len(readable) > 1:
        for batch in readable:
            report = None if batch.name in trusted else validate_quietly(batch.frame)  # type: ignore[arg-type]
            if report is None or report.success:
                survivors.append(batch)
            else:  # validate it again through the checkpoint, so Data Docs show why it was rejected
                rejected.append(Rejection(batch, validate(batch.frame)))  # type: ignore[arg-type]
    else:
        survivors = readable
    if not survivors:
        return Screening(accepted=(), rejected=tuple(rejected), report=rejected[0].report)
    combined: ValidationReport | None = None
    if all(_columns(b) == _columns(survivors[0]) for b in survivors):
        frames = [b.frame for b in survivors]
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        assert frame is not None
        combined = validate(frame)
        if combined.success:
            return Screening(accepted=tuple(survivors), rejected=tuple(rejected), report=combined, frame=frame)
        if len(survivors) == 1:
            rejected.append(Rejection(survivors[0], combined))
            return Screening(accepted=(), rejected=tuple(rejected), report=combined)
    accepted: list[Batch] = []
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
    return Screening(accepted=tuple(accepted), rejected=tuple(rejected), report=combined or rejected[0].report)


def screen_with(
    validator: Validator,
    batches: Sequence[Batch],
    suite: dict[str, Any],
    *,
    run_name: str | None = None,
    trusted: Collection[str] = (),
) -> Screening:
    """`screen_batches` through one GX validator: checkpoints with Data Docs, direct checks without."""
    return screen_batches(
        batches,
        suite["name"],
        validate=lambda frame: validator.validate(frame, suite, run_name=run_name),
        validate_quietly=lambda frame: validator.validate(frame, suite, data_docs=False),
        trusted=trusted,
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
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    batch = rejection.batch
    manifest: dict[str, Any] = {
        "dataset": dataset,
        "source": source,
        "batch": batch.name,
        "original_path": str(batch.path) if batch.path else None,
        "quarantined_at": datetime.now(UTC).isoformat(),
        "mode": mode if batch.path else "written",
        "reasons": [f["message"] for f in report["failed_expectations"]],
        **(context or {}),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    if batch.path is not None:
        target = folder / batch.path.name
        if mode == "move":
            shutil.move(str(batch.path), target)
        else:
            shutil.copy2(batch.path, target)
    elif batch.frame is not None:
        batch.frame.to_parquet(folder / "rows.parquet", index=False)
    return folder
