"""The CI job summary (.github/scripts/summary.py): Markdown from `mlops run --json` and validation reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".github" / "scripts" / "summary.py"


@pytest.fixture(scope="module")
def summary() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_summary", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OUTCOME = {
    "dry_run": False,
    "failed_checks": [],
    "metrics": {"roc_auc": 0.8512, "f1": 0.52, "log_loss": 0.48},
    "model_name": "loan_default",
    "model_version": "3",
    "promoted": True,
    "reason": "roc_auc 0.8512 beats champion 0.8400",
    "run_id": "abc123",
    "would_promote": True,
}
DECISION = {
    "decision": {
        "promote": True,
        "metric": "roc_auc",
        "checks": [
            {"name": "floor:roc_auc", "passed": True, "detail": "roc_auc 0.8512 >= floor 0.7000"},
            {"name": "train_gap", "passed": None, "detail": "no limit configured"},
            {"name": "beats_champion", "passed": True, "detail": "gain | +0.0112"},
        ],
    },
    "evidence": {
        "champion": {"roc_auc": 0.84, "f1": 0.5, "log_loss": 0.5},
        "champion_version": "2",
        "dummy": {"roc_auc": 0.5, "f1": 0.0, "log_loss": 0.41},
        "improvement": {"mean": 0.0112, "low": 0.004, "high": 0.018, "confidence": 0.95, "samples": 1000, "rows": 4000},
    },
}


def test_a_promotion_shows_verdict_metrics_against_champion_and_dummy_and_each_check(summary: ModuleType) -> None:
    markdown = summary.render(OUTCOME, title="CT", exit_code=0, decision=DECISION)
    assert markdown.startswith("## CT\n")
    assert "`loan_default` v3 promoted to champion" in markdown
    assert "| metric | candidate | champion v2 | dummy baseline |" in markdown
    assert "| **roc_auc** (gate) | 0.8512 | 0.8400 | 0.5000 |" in markdown
    lines = markdown.splitlines()
    assert lines.index("| **roc_auc** (gate) | 0.8512 | 0.8400 | 0.5000 |") < lines.index(
        "| f1 | 0.5200 | 0.5000 | 0.0000 |"
    )
    assert "| floor:roc_auc | ✅ passed | roc_auc 0.8512 >= floor 0.7000 |" in markdown
    assert "| train_gap | ➖ not applicable | no limit configured |" in markdown
    assert "gain \\| +0.0112" in markdown  # a pipe inside a cell is escaped
    assert "+0.0112, 95% interval [+0.0040, +0.0180] (1000 samples of 4000 rows)" in markdown
    assert "| exit status | 0 |" in markdown


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"promoted": False, "would_promote": False, "failed_checks": ["beats_champion"]}, "v3 held back"),
        ({"dry_run": True, "promoted": False, "would_promote": True}, "would be promoted (nothing registered)"),
        ({"dry_run": True, "promoted": False, "would_promote": False}, "would be held back"),
    ],
)
def test_held_back_and_dry_runs_say_so(summary: ModuleType, changes: dict, expected: str) -> None:
    markdown = summary.render({**OUTCOME, **changes})
    assert expected in markdown
    assert "promoted to champion" not in markdown
    if changes.get("failed_checks"):
        assert "| failed checks | beats_champion |" in markdown


def test_rejected_data_and_a_crash_are_reported_without_metrics(summary: ModuleType) -> None:
    rejected = summary.render({"rejected": True, "report": "/ws/r.json", "quarantined": ["/ws/q/b1"]}, exit_code=3)
    assert "data contract rejected the data" in rejected and "`/ws/q/b1`" in rejected
    assert "metric" not in rejected
    crashed = summary.render(None, exit_code=1)
    assert "failed (exit status 1) before printing an outcome" in crashed


def test_the_outcome_is_the_last_json_line_of_the_output(summary: ModuleType, tmp_path: Path) -> None:
    output = tmp_path / "run.json"
    output.write_text('{"not": "this"}\nsome log line\n' + json.dumps(OUTCOME) + "\n\n")
    assert summary.last_json_object(output) == OUTCOME
    output.write_text("no json at all\n{broken\n")
    assert summary.last_json_object(output) is None
    assert summary.last_json_object(tmp_path / "missing.json") is None


def test_main_appends_to_the_step_summary(summary: ModuleType, tmp_path: Path, monkeypatch, capsys) -> None:
    run, decision, step_summary = tmp_path / "run.json", tmp_path / "decision.json", tmp_path / "summary.md"
    run.write_text(json.dumps(OUTCOME) + "\n")
    decision.write_text(json.dumps(DECISION))
    step_summary.write_text("earlier job output\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    args = ["training", "--run", str(run), "--decision", str(decision), "--exit-code", "0", "--title", "T"]
    assert summary.main(args) == 0
    written = step_summary.read_text()
    assert written.startswith("earlier job output\n## T\n")
    assert "champion v2" in written and written.rstrip().endswith(capsys.readouterr().out.rstrip())


def test_validation_reports_list_each_failed_expectation(summary: ModuleType, tmp_path: Path) -> None:
    failure = {
        "expectation": "expect_column_median_to_be_between",
        "column": "annual_income",
        "observed": 58.1,
        "kwargs": {"column": "annual_income", "min_value": 10020.0, "max_value": 149100.0},
    }
    accepted = {
        "source": "data/",
        "accepted": ["b0.parquet", "b1.parquet"],
        "rejected": [],
        "report": {"suite": "loans", "success": True, "evaluated_expectations": 87, "failed_expectations": []},
    }
    rejected = {
        "source": "bad/",
        "accepted": [],
        "rejected": [{"batch": "b9.parquet", "failed_expectations": [failure]}],
        "report": {"suite": "loans", "success": False, "evaluated_expectations": 87, "failed_expectations": [failure]},
    }
    markdown = summary.render_validation(
        [(Path("ok.json"), accepted), (Path("bad.json"), rejected), (Path("none.json"), None)]
    )
    assert (
        "✅ accepted**: `data/` against suite `loans` (87 expectations; 2 batch(es) accepted, 0 rejected)" in markdown
    )
    assert "⛔ rejected**: `bad/`" in markdown
    assert (
        '| b9.parquet | expect_column_median_to_be_between | annual_income | 58.1000 | {"min_value": 10020.0, '
        '"max_value": 149100.0} |' in markdown
    )
    assert "`none.json`: no validation report" in markdown
