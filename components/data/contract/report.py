"""A validation's outcome: each failed expectation with what was observed, judged corrupt or drift."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.data.contract.expectations import plain

DRIFT_CHECKS = {"range", "center"}  # failing these is drift for monitoring to judge, not a reason to refuse a batch


@dataclass(frozen=True)
class Failure:
    """One failed expectation, with what was observed."""

    expectation: str
    column: str | None
    message: str
    observed: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    severity: str = "break"  # break: the batch is refused; drift: monitoring's to judge


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one batch against one suite."""

    suite: str
    success: bool
    evaluated: int
    failures: tuple[Failure, ...]
    docs_url: str | None = None

    @property
    def breaks(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.severity != "drift")

    @property
    def drift(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.severity == "drift")

    @property
    def judgement(self) -> str:
        """corrupt (refused), drift (used, and monitoring judges the shift) or clean."""
        return "corrupt" if self.breaks else "drift" if self.drift else "clean"

    @property
    def why(self) -> str:
        if self.breaks:
            kinds = sorted({f.expectation.removeprefix("expect_") for f in self.breaks})
            return "refused as corrupt: it breaks " + ", ".join(kinds)
        if self.drift:
            columns = sorted({str(f.column) for f in self.drift})
            return (
                f"judged as drift: values of {', '.join(columns)} beyond the reference's range, while units, "
                "types, columns and hard bounds hold; monitoring judges the shift"
            )
        return "clean"

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "judgement": self.judgement,
            "why": self.why,
            "evaluated_expectations": self.evaluated,
            "failed_expectations": [asdict(f) for f in self.breaks],
            "drift": [asdict(f) for f in self.drift],
            "docs_url": self.docs_url,
        }

    def summary(self) -> str:
        drift = [f"  ~ {failure.message} (drift)" for failure in self.drift]
        if self.success:
            return "\n".join([f"suite {self.suite!r}: all {self.evaluated - len(drift)} checks passed", *drift])
        lines = [f"suite {self.suite!r}: {len(self.breaks)} of {self.evaluated} expectations failed ({self.why})"]
        lines += [f"  - {failure.message}" for failure in self.breaks]
        return "\n".join(lines + drift)


class DataRejected(Exception):
    """Validation failed: the batch must not be used for training or scoring."""

    def __init__(self, report: ValidationReport, report_path: Path | None = None, quarantined: tuple[Path, ...] = ()):
        self.report = report
        self.report_path = report_path
        self.quarantined = quarantined
        where = f"\nvalidation report: {report_path}" if report_path else ""
        kept = "".join(f"\nquarantined: {folder}" for folder in quarantined)
        super().__init__(f"data rejected by the contract\n{report.summary()}{where}{kept}")


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def _failure_message(
    kind: str, column: str | None, kwargs: dict[str, Any], result: dict[str, Any], error: str | None
) -> str:
    head = f"{kind}({column})" if column else kind
    if error:
        return f"{head}: could not be evaluated: {error.splitlines()[0][:300]}"
    if kind == "expect_column_to_exist":
        return f"{head}: column {column!r} is missing"
    if kind == "expect_table_columns_to_match_ordered_list":
        observed = result.get("observed_value") or []
        expected = kwargs.get("column_list") or []
        missing = [c for c in expected if c not in observed]
        extra = [c for c in observed if c not in expected]
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        if not parts:
            parts.append(f"order differs: observed {observed}")
        return f"{head}: " + "; ".join(parts)
    if "unexpected_count" in result and result.get("unexpected_count") is not None:
        what = {
            "expect_column_values_to_be_between": (
                f"outside [{format_value(kwargs.get('min_value'))}, {format_value(kwargs.get('max_value'))}]"
            ),
            "expect_column_values_to_be_in_set": "not in the allowed set",
            "expect_column_values_to_not_be_null": "null",
            "expect_column_values_to_be_unique": "duplicated",
            "expect_compound_columns_to_be_unique": "in duplicated rows",
        }.get(kind, "unexpected")
        examples = ", ".join(format_value(v) for v in (result.get("partial_unexpected_list") or [])[:5])
        mostly = f" (allowed: {1 - kwargs['mostly']:.2%})" if "mostly" in kwargs else ""
        percent = result.get("unexpected_percent")
        share = f" = {percent:.2f}%" if percent is not None else ""
        count = result.get("element_count")
        return f"{head}: {result['unexpected_count']} of {count} values {what}{share}{mostly}; e.g. [{examples}]"
    if kind == "expect_column_values_to_be_in_type_list":
        return f"{head}: observed type {result.get('observed_value')!r}, expected one of {kwargs.get('type_list')}"
    expected = {k: v for k, v in kwargs.items() if k not in ("column", "batch_id")}
    return f"{head}: observed {format_value(result.get('observed_value'))}, expected {expected}"


def _exception_message(info: dict[str, Any] | None) -> str | None:
    if not info:
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info["raised_exception"] else None
    messages = [
        str(v.get("exception_message")) for v in info.values() if isinstance(v, dict) and v.get("raised_exception")
    ]
    return "; ".join(messages) or None


def report_from(suite_name: str, result: Any, docs_url: str | None) -> ValidationReport:
    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        kwargs = {k: plain(v) for k, v in config.kwargs.items() if k != "batch_id"}
        details = item.result or {}
        error = _exception_message(item.exception_info)
        check = (config.meta or {}).get("check")
        failures.append(
            Failure(
                expectation=config.type,
                column=kwargs.get("column"),
                message=_failure_message(config.type, kwargs.get("column"), kwargs, details, error),
                observed=plain(details.get("observed_value")),
                kwargs=kwargs,
                severity="drift" if check in DRIFT_CHECKS else "break",
            )
        )
    # A missing or mistyped column makes its other expectations error out; they add no news.
    root_causes = {"expect_column_to_exist", "expect_column_values_to_be_in_type_list"}
    broken = {f.column for f in failures if f.expectation in root_causes and f.column}
    failures = [
        f
        for f in failures
        if f.expectation == "expect_column_to_exist"
        or f.column not in broken
        or ": could not be evaluated" not in f.message
    ]
    order = {"expect_table_columns_to_match_ordered_list": 0, "expect_column_to_exist": 1}
    failures.sort(key=lambda f: (order.get(f.expectation, 2), f.column or ""))
    return ValidationReport(
        suite=suite_name,
        success=not any(f.severity != "drift" for f in failures),
        evaluated=len(result.results),
        failures=tuple(failures),
        docs_url=docs_url,
    )
