"""The serving benchmark's report: the goals, the runs table and the details, printed with rich."""

from __future__ import annotations

import os
import sys
from typing import Any

MAX_NON_2XX = 0
MIN_THROUGHPUT_RATIO = 10.0
MAX_LATENCY_RATIO = 3.0
GOAL_DURATION_S = 30.0


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def goals(inproc: dict[str, Any] | None, runs: dict[str, dict[str, Any]], high: int) -> list[dict[str, Any]]:
    ours_hi, ours_1, mlflow_hi = runs.get(f"ours c={high}"), runs.get("ours c=1"), runs.get(f"mlflow c={high}")
    found = []
    if ours_hi is not None:
        note = "" if ours_hi["duration_s"] >= GOAL_DURATION_S else f" (measured {ours_hi['duration_s']:g} s, < 30 s)"
        found.append(
            {
                "goal": f"zero non-2xx at concurrency {high} over {GOAL_DURATION_S:g} s",
                "measured": f"{ours_hi['non_2xx']} of {ours_hi['count']}{note}",
                "passed": ours_hi["non_2xx"] <= MAX_NON_2XX,
            }
        )
    if ours_hi is not None and mlflow_hi is not None and mlflow_hi["rps"] > 0:
        ratio = ours_hi["rps"] / mlflow_hi["rps"]
        found.append(
            {
                "goal": f"req/s at concurrency {high} >= {MIN_THROUGHPUT_RATIO:g}x mlflow models serve",
                "measured": f"{ratio:.2f}x ({ours_hi['rps']:.0f} vs {mlflow_hi['rps']:.0f} req/s)",
                "ratio": ratio,
                "passed": ratio >= MIN_THROUGHPUT_RATIO,
            }
        )
    if ours_1 is not None and inproc is not None and ours_1["p50_ms"] is not None:
        ratio = ours_1["p50_ms"] / inproc["p50_ms"]
        found.append(
            {
                "goal": f"p50 at concurrency 1 <= {MAX_LATENCY_RATIO:g}x in-process single-row predict",
                "measured": f"{ratio:.2f}x ({ours_1['p50_ms']:.2f} vs {inproc['p50_ms']:.2f} ms)",
                "ratio": ratio,
                "passed": ratio <= MAX_LATENCY_RATIO,
            }
        )
    return found


def _runs_table(report: dict[str, Any]) -> Any:
    """One row per measured case (the in-process predict first): latency, throughput and CPU shares."""
    from rich.table import Table

    table = Table(title=None)
    for column, justify in [
        ("case", "left"),
        ("s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("req/s", "right"),
        ("non-2xx", "right"),
        ("requests", "right"),
        ("CPU ms/req", "right"),
        ("server CPU", "right"),
        ("loadgen CPU", "right"),
        ("other CPU", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    inproc = report.get("in_process")
    if inproc:
        table.add_row(
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
            "-" if inproc.get("other_cpu_share") is None else f"{max(0.0, inproc['other_cpu_share']):.0%}",
        )
    for case, run in report["runs"].items():
        if "error" in run:
            table.add_row(case, *["-"] * 10)
            continue
        per_request = run["server_cpu_s"] * 1000 / run["count"] if run.get("server_cpu_s") and run["count"] else None
        share = run.get("server_cpu_share")
        table.add_row(
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
            "-" if run.get("other_cpu_share") is None else f"{max(0.0, run['other_cpu_share']):.0%}",
        )
    return table


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
    console.print(
        f"Serving benchmark: {meta['model_uri']} (v{meta['model_version']}, {meta['estimator']}), "
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
