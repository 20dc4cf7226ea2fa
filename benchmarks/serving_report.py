"""The serving benchmark's report: the goals, the runs table and the details, printed with rich."""

from __future__ import annotations

import os
import sys
from typing import Any

MAX_NON_2XX = 0
MIN_THROUGHPUT_RATIO = 10.0
MIN_INPROC_SPEEDUP = 15.0
MAX_HEALTHZ_RATIO = 2.0
MAX_TAIL_RATIO = 3.0
MIN_BATCH_RATIO = 1.5
GOAL_DURATION_S = 30.0


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _goal(name: str, measured: str, passed: bool, ratio: float | None = None) -> dict[str, Any]:
    return {"goal": name, "measured": measured, "passed": passed, "ratio": ratio}


def goals(
    inproc: dict[str, Any] | None,
    runs: dict[str, dict[str, Any]],
    high: int,
    batch: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Each goal of issue 18 that this case measured, with its ratio and verdict."""
    ours_hi, mlflow_hi = runs.get(f"ours c={high}"), runs.get(f"mlflow c={high}")
    return [
        *_inproc_goal(inproc),
        *_healthz_goal(runs.get("ours c=1"), runs.get("ours GET /healthz c=1")),
        *_load_goals(ours_hi, high),
        *_mlflow_goal(ours_hi, mlflow_hi, high),
        *_batch_goal(batch),
    ]


def _inproc_goal(inproc: dict[str, Any] | None) -> list[dict[str, Any]]:
    pipeline = (inproc or {}).get("pipeline")
    if inproc is None or not pipeline:
        return []
    ratio = pipeline["p50_ms"] / inproc["p50_ms"]
    path = (inproc.get("inference") or {}).get("path", "?")
    return [
        _goal(
            f"in-process single row >= {MIN_INPROC_SPEEDUP:g}x faster than the pipeline's call",
            f"{ratio:.1f}x ({inproc['p50_ms'] * 1000:.0f} vs {pipeline['p50_ms'] * 1000:.0f} µs p50; {path})",
            ratio >= MIN_INPROC_SPEEDUP,
            ratio,
        )
    ]


def _healthz_goal(ours_1: dict[str, Any] | None, healthz: dict[str, Any] | None) -> list[dict[str, Any]]:
    if ours_1 is None or healthz is None or not ours_1["p50_ms"] or not healthz["p50_ms"]:
        return []
    ratio = ours_1["p50_ms"] / healthz["p50_ms"]
    return [
        _goal(
            f"p50 at concurrency 1 <= {MAX_HEALTHZ_RATIO:g}x GET /healthz p50",
            f"{ratio:.2f}x ({ours_1['p50_ms']:.2f} vs {healthz['p50_ms']:.2f} ms)",
            ratio <= MAX_HEALTHZ_RATIO,
            ratio,
        )
    ]


def _load_goals(ours_hi: dict[str, Any] | None, high: int) -> list[dict[str, Any]]:
    if ours_hi is None:
        return []
    note = "" if ours_hi["duration_s"] >= GOAL_DURATION_S else f" (measured {ours_hi['duration_s']:g} s, < 30 s)"
    found = [
        _goal(
            f"zero non-2xx at concurrency {high} over {GOAL_DURATION_S:g} s",
            f"{ours_hi['non_2xx']} of {ours_hi['count']}{note}",
            ours_hi["non_2xx"] <= MAX_NON_2XX,
        )
    ]
    if ours_hi["p50_ms"]:
        ratio = ours_hi["p99_ms"] / ours_hi["p50_ms"]
        found.append(
            _goal(
                f"p99 <= {MAX_TAIL_RATIO:g}x p50 at concurrency {high}",
                f"{ratio:.2f}x ({ours_hi['p99_ms']:.1f} vs {ours_hi['p50_ms']:.1f} ms)",
                ratio <= MAX_TAIL_RATIO,
                ratio,
            )
        )
    return found


def _mlflow_goal(ours_hi: dict[str, Any] | None, mlflow_hi: dict[str, Any] | None, high: int) -> list[dict[str, Any]]:
    if ours_hi is None or mlflow_hi is None or mlflow_hi["rps"] <= 0:
        return []
    ratio = ours_hi["rps"] / mlflow_hi["rps"]
    return [
        _goal(
            f"req/s at concurrency {high} >= {MIN_THROUGHPUT_RATIO:g}x mlflow models serve",
            f"{ratio:.2f}x ({ours_hi['rps']:.0f} vs {mlflow_hi['rps']:.0f} req/s; load generator "
            f"{ours_hi['client_cpu_share']:.0%} vs {mlflow_hi['client_cpu_share']:.0%} of a core)",
            ratio >= MIN_THROUGHPUT_RATIO,
            ratio,
        )
    ]


def _batch_goal(batch: dict[str, Any] | None) -> list[dict[str, Any]]:
    if batch is None:
        return []
    return [
        _goal(
            f"batch rows/s >= {MIN_BATCH_RATIO:g}x whole-frame pipeline predict",
            f"{batch['ratio']:.2f}x ({batch['ours_rows_per_s']:,.0f} vs {batch['whole_frame_rows_per_s']:,.0f} "
            f"rows/s, {batch['rows']:,} rows)",
            batch["ratio"] >= MIN_BATCH_RATIO,
            batch["ratio"],
        )
    ]


RUN_COLUMNS = (
    "case",
    "s",
    "p50 ms",
    "p99 ms",
    "req/s",
    "non-2xx",
    "requests",
    "CPU ms/req",
    "server CPU",
    "loadgen CPU",
    "other CPU",
)


def _runs_table(report: dict[str, Any]) -> Any:
    """One row per measured case (the in-process predict first): latency, throughput and CPU shares."""
    from rich.table import Table

    table = Table(title=None)
    for column in RUN_COLUMNS:
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in _inproc_rows(report.get("in_process")):
        table.add_row(*row)
    for case, run in report["runs"].items():
        table.add_row(*_run_row(case, run))
    return table


def _share(value: float | None) -> str:
    return "-" if value is None else f"{max(0.0, value):.0%}"


def _inproc_rows(inproc: dict[str, Any] | None) -> list[tuple[str, ...]]:
    """The pipeline's own call and the service's in-process predict, when measured."""
    if not inproc:
        return []
    rows = []
    if pipe := inproc.get("pipeline"):
        rows.append(
            (
                "in-process pipeline call, 1 row",
                "-",
                _fmt(pipe["p50_ms"]),
                _fmt(pipe["p99_ms"]),
                _fmt(1000 / pipe["mean_ms"], ".0f"),
                "-",
                str(pipe["count"]),
                _fmt(pipe["mean_ms"]),
                "-",
                "-",
                "-",
            )
        )
    rows.append(
        (
            "in-process predict, 1 row",
            "-",
            _fmt(inproc["p50_ms"]),
            _fmt(inproc["p99_ms"]),
            _fmt(inproc["rps"], ".0f"),
            "-",
            str(inproc["count"]),
            _fmt(inproc["mean_ms"]),
            "-",
            "-",
            _share(inproc.get("other_cpu_share")),
        )
    )
    return rows


def _run_row(case: str, run: dict[str, Any]) -> tuple[str, ...]:
    if "error" in run:
        return (case, *["-"] * (len(RUN_COLUMNS) - 1))
    per_request = run["server_cpu_s"] * 1000 / run["count"] if run.get("server_cpu_s") and run["count"] else None
    share = run.get("server_cpu_share")
    return (
        case,
        f"{run['duration_s']:g}",
        _fmt(run["p50_ms"]),
        _fmt(run["p99_ms"]),
        _fmt(run["rps"], ".0f"),
        str(run["non_2xx"]),
        str(run["count"]),
        _fmt(per_request),
        "-" if share is None else f"{share:.0%}",
        f"{run['client_cpu_share']:.0%}",
        _share(run.get("other_cpu_share")),
    )


def _print_details(console: Any, report: dict[str, Any]) -> None:
    """Each case's errors and micro-batching counters, the in-process breakdown, and the notes."""
    for case, run in report["runs"].items():
        if "error" in run:
            console.print(f"[red]{case}: {run['error']}[/red]")
        elif run["errors"]:
            console.print(f"{case}: first errors: {run['errors']}")
    for case, run in report["runs"].items():
        batching = run.get("batching")
        if batching and batching.get("batches"):
            counters = ", ".join(f"{k} {v}" for k, v in batching.items())
            mean = batching.get("rows", 0) / batching["batches"]
            console.print(f"{case}: micro-batching (warm-up included) {counters}; mean batch {mean:.1f} rows")
    breakdown = (report.get("in_process") or {}).get("breakdown")
    if isinstance(breakdown, dict):
        parts = ", ".join(f"{k.removesuffix('_ms')} {v:.3f}" for k, v in breakdown.items())
        console.print(f"In-process single row, median ms: {parts}")
    elif breakdown:
        console.print(f"In-process breakdown {breakdown}")
    for note in report.get("notes", []):
        console.print(note)


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    meta = report["meta"]
    console.print()
    path = ((report.get("in_process") or {}).get("inference") or {}).get("path")
    console.print(
        f"Serving benchmark {report.get('case') or ''}: {meta['model_uri']} (v{meta['model_version']}, "
        f"{meta['estimator']}, answers through the {path}), "
        f"{meta['cpus']} CPUs, load average before {meta['loadavg_before']}, after {meta['loadavg_after']}"
    )
    console.print(_runs_table(report))
    console.print(
        "s: measured seconds (after the warm-up). CPU ms/req: the server process tree's CPU time per answered "
        "request (in-process: mean wall time per call). Server / loadgen CPU: share of one core over the measured "
        "window used by the server's process tree / by the load generator process; other CPU: by everything else "
        f"on the machine ({os.cpu_count()} cores = {os.cpu_count() * 100}%), i.e. how shared the machine was."
    )
    _print_details(console, report)
    console.print()
    console.print("Goals:")
    for goal in report["goals"]:
        verdict = "[green]PASS[/green]" if goal["passed"] else "[bold red]FAIL[/bold red]"
        console.print(f"  {verdict}  {goal['goal']}: {goal['measured']}")
    if not report["goals"]:
        console.print("  (nothing to judge: see the errors above)")


# ------------------------------------------------------------------------------------------------ main


SHORT = {
    "in-process single row": "in-proc x",
    "p50 at concurrency 1": "c=1 / healthz",
    "zero non-2xx": "non-2xx",
    "p99 <=": "p99/p50",
    "req/s at concurrency": "x mlflow",
    "batch rows/s": "batch x",
}


def print_summary(reports: list[dict[str, Any]]) -> None:
    """Every case's goals side by side: one row per family x task."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    table = Table(title="Every case, side by side (goal in the header)")
    table.add_column("case")
    table.add_column("path")
    heads = [
        ("in-proc x", f">= {MIN_INPROC_SPEEDUP:g}"),
        ("c=1 / healthz", f"<= {MAX_HEALTHZ_RATIO:g}"),
        ("non-2xx", "0"),
        ("p99/p50", f"<= {MAX_TAIL_RATIO:g}"),
        ("x mlflow", f">= {MIN_THROUGHPUT_RATIO:g}"),
        ("batch x", f">= {MIN_BATCH_RATIO:g}"),
        ("loadgen CPU", "c=32"),
    ]
    for name, goal in heads:
        table.add_column(f"{name}\n{goal}", justify="right")
    failed = 0
    for report in reports:
        if "error" in report:
            table.add_row(report["case"], "[red]error[/red]", *["-"] * len(heads))
            continue
        cells: dict[str, str] = {}
        for goal in report.get("goals", []):
            key = next((v for k, v in SHORT.items() if goal["goal"].startswith(k)), None)
            if key is None:
                continue
            value = goal["measured"].split(" ")[0] if goal.get("ratio") is None else f"{goal['ratio']:.2f}"
            cells[key] = value if goal["passed"] else f"[bold red]{value}[/bold red]"
            failed += not goal["passed"]
        high = next((r for c, r in report["runs"].items() if c.startswith("ours c=") and c != "ours c=1"), None)
        cells["loadgen CPU"] = f"{high['client_cpu_share']:.0%}" if high and "client_cpu_share" in high else "-"
        path = ((report.get("in_process") or {}).get("inference") or {}).get("path", "-")
        table.add_row(report["case"], path, *(cells.get(name, "-") for name, _ in heads))
    console.print()
    console.print(table)
    console.print(
        f"{failed} goal(s) not met (red). The load generator shares the machine ({os.cpu_count()} cores) with the "
        "server: its CPU share is shown so a throughput bounded by the client is visible as such."
    )
