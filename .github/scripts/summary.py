"""Render a training run or data-contract validations as Markdown for a GitHub Actions job summary.

`training` reads what `mlops run --json` printed (its last line: the outcome, or
`{"rejected": true, ...}` when the data contract rejected the data), optionally what
`mlops status --json` printed afterwards, and the run's `decision.json` (from `--decision`, else
downloaded from the run in MLflow). `validation` reads what `mlops expectations validate --json`
printed. The Markdown goes to stdout and is appended to $GITHUB_STEP_SUMMARY when that is set.

    python .github/scripts/summary.py training --run run.json --status status.json --exit-code 0
    python .github/scripts/summary.py validation validation.json [more.json ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# The metrics shown first, in this order; any others follow alphabetically.
LEADING_METRICS = ("roc_auc", "average_precision", "f1", "precision", "recall", "balanced_accuracy", "accuracy")
CHECK_MARKS = {True: "✅ passed", False: "❌ failed", None: "➖ not applicable"}


def last_json_object(path: Path) -> dict[str, Any] | None:
    """The last line of the file that is a JSON object (commands print their outcome last)."""
    if not path.is_file():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def fetch_decision(tracking_uri: str | None, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """(decision.json of the MLflow run, None) or (None, why it could not be read)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        from mlflow import MlflowClient

        with tempfile.TemporaryDirectory() as tmp:
            local = MlflowClient(tracking_uri).download_artifacts(run_id, "decision.json", tmp)
            return json.loads(Path(local).read_text()), None
    except Exception as exc:  # noqa: BLE001 - the summary reports what it could not read, it never fails the job
        return None, f"{type(exc).__name__}: {exc}"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _metric_order(names: set[str]) -> list[str]:
    return [m for m in LEADING_METRICS if m in names] + sorted(names - set(LEADING_METRICS))


def _verdict(outcome: dict[str, Any]) -> str:
    name, version = outcome.get("model_name", "model"), outcome.get("model_version")
    if outcome.get("dry_run"):
        would = "would be promoted" if outcome.get("would_promote") else "would be held back"
        return f"🧪 dry run of `{name}`: {would} (nothing registered)"
    if outcome.get("promoted"):
        return f"🏆 `{name}` v{version} promoted to champion"
    return f"✋ `{name}` v{version} held back: the champion is unchanged"


def render(
    outcome: dict[str, Any] | None,
    *,
    title: str = "Training run",
    exit_code: int | None = None,
    status: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
    decision_error: str | None = None,
) -> str:
    """The Markdown summary of one `mlops run`."""
    lines = [f"## {title}", ""]
    if outcome is None:
        lines.append(f"❌ `mlops run` failed (exit status {_cell(exit_code)}) before printing an outcome; see the log.")
        return "\n".join(lines) + "\n"
    if outcome.get("rejected"):
        lines += ["⛔ **The data contract rejected the data**: nothing was trained or registered.", ""]
        if outcome.get("report"):
            lines.append(f"- validation report: `{outcome['report']}`")
        for folder in outcome.get("quarantined") or []:
            lines.append(f"- quarantined: `{folder}`")
        return "\n".join(lines) + "\n"

    lines += [f"**{_verdict(outcome)}**", "", "| | |", "| --- | --- |"]
    lines.append(f"| reason | {_cell(outcome.get('reason'))} |")
    if outcome.get("failed_checks"):
        lines.append(f"| failed checks | {_cell(', '.join(outcome['failed_checks']))} |")
    lines.append(f"| MLflow run | `{_cell(outcome.get('run_id'))}` |")
    if exit_code is not None:
        lines.append(f"| exit status | {exit_code} |")
    lines.append("")

    verdict = (decision or {}).get("decision") or {}
    evidence = (decision or {}).get("evidence") or {}
    candidate = outcome.get("metrics") or evidence.get("candidate") or {}
    champion = evidence.get("champion") or {}
    dummy = evidence.get("dummy") or {}
    gate_metric = verdict.get("metric")
    if candidate:
        header = ["metric", "candidate"]
        if champion:
            header.append(f"champion v{evidence.get('champion_version')}")
        if dummy:
            header.append("dummy baseline")
        lines += ["### Held-out metrics", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for name in _metric_order(set(candidate) | set(champion)):
            shown = f"**{name}** (gate)" if name == gate_metric else name
            row = [shown, _cell(candidate.get(name))]
            if champion:
                row.append(_cell(champion.get(name)))
            if dummy:
                row.append(_cell(dummy.get(name)))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")

    if verdict.get("checks"):
        lines += ["### Promotion checks", "", "| check | result | detail |", "| --- | --- | --- |"]
        for check in verdict["checks"]:
            mark = CHECK_MARKS.get(check.get("passed"), _cell(check.get("passed")))
            lines.append(f"| {_cell(check.get('name'))} | {mark} | {_cell(check.get('detail'))} |")
        gain = evidence.get("improvement")
        if isinstance(gain, dict) and {"mean", "low", "high"} <= set(gain):
            lines += [
                "",
                f"Gain in {gate_metric} over the champion (paired bootstrap): {gain['mean']:+.4f}, "
                f"{gain.get('confidence', 0.95):.0%} interval [{gain['low']:+.4f}, {gain['high']:+.4f}] "
                f"({gain.get('samples', '?')} samples of {gain.get('rows', '?')} rows)",
            ]
        lines.append("")
    elif decision_error:
        lines += [f"_decision.json could not be read: {_cell(decision_error)}_", ""]

    for model in (status or {}).get("models") or []:
        if model.get("name") == outcome.get("model_name"):
            lines.append(
                f"Champion of `{model['name']}` after this run: "
                f"{'v' + str(model['version']) if model.get('version') else 'none'}"
                f"{' (promoted ' + model['promoted_at'] + ')' if model.get('promoted_at') else ''}."
            )
    if status and status.get("tracking_uri"):
        lines.append(f"Tracking: `{status['tracking_uri']}`")
    return "\n".join(lines).rstrip() + "\n"


def render_validation(reports: list[tuple[Path, dict[str, Any] | None]], *, title: str = "Data contract") -> str:
    """The Markdown summary of `mlops expectations validate --json` reports, one section each."""
    lines = [f"## {title}", ""]
    for path, report in reports:
        if report is None:
            lines += [f"❌ `{path.name}`: no validation report (the command failed before writing one)", ""]
            continue
        overall = report.get("report") or {}
        accepted, rejected = report.get("accepted") or [], report.get("rejected") or []
        verdict = "✅ accepted" if overall.get("success") else "⛔ rejected"
        lines.append(
            f"**{verdict}**: `{report.get('source')}` against suite `{overall.get('suite')}` "
            f"({overall.get('evaluated_expectations')} expectations; {len(accepted)} batch(es) accepted, "
            f"{len(rejected)} rejected)"
        )
        failures = [(r.get("batch"), f) for r in rejected for f in r.get("failed_expectations") or []]
        if not rejected:
            failures = [("all batches", f) for f in overall.get("failed_expectations") or []]
        if failures:
            lines += ["", "| batch | expectation | column | observed | expected |", "| --- | --- | --- | --- | --- |"]
            for batch, failure in failures:
                expected = {k: v for k, v in (failure.get("kwargs") or {}).items() if k != "column"}
                lines.append(
                    f"| {_cell(batch)} | {_cell(failure.get('expectation'))} | {_cell(failure.get('column'))} "
                    f"| {_cell(failure.get('observed'))} | {_cell(json.dumps(expected, default=str))} |"
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _publish(markdown: str) -> None:
    sys.stdout.write(markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("training", help="One `mlops run --json` outcome, with its promotion decision.")
    training.add_argument("--run", type=Path, required=True, help="File holding what `mlops run --json` printed.")
    training.add_argument("--status", type=Path, help="File holding what `mlops status --json` printed.")
    training.add_argument("--decision", type=Path, help="decision.json (default: downloaded from the MLflow run).")
    training.add_argument("--exit-code", type=int, help="The exit status of `mlops run`.")
    training.add_argument("--title", default="Training run")
    validation = commands.add_parser("validation", help="`mlops expectations validate --json` reports.")
    validation.add_argument("reports", type=Path, nargs="+")
    validation.add_argument("--title", default="Data contract")
    args = parser.parse_args(argv)

    if args.command == "validation":
        _publish(render_validation([(path, last_json_object(path)) for path in args.reports], title=args.title))
        return 0
    outcome = last_json_object(args.run)
    status = last_json_object(args.status) if args.status else None
    decision, error = None, None
    if args.decision is not None:
        decision = json.loads(args.decision.read_text())
    elif outcome is not None and outcome.get("run_id"):
        tracking_uri = (status or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        decision, error = fetch_decision(tracking_uri, outcome["run_id"])
    _publish(
        render(
            outcome, title=args.title, exit_code=args.exit_code, status=status, decision=decision, decision_error=error
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
