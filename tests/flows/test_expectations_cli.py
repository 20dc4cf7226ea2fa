"""`mlops expectations init | validate | diff`: the contract without training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from components.simulation.simulate import write_batches
from flows.cli import EXIT_REJECTED, app
from tests.conftest import write_config


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    data = tmp_path / "data"
    write_batches(data, 2, 500, seed=31)
    config = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", data, tmp_path / "suites")
    return config, data, tmp_path / "suites" / "loans.json"


def test_init_writes_a_reviewable_suite_and_refuses_to_overwrite(tmp_path: Path) -> None:
    config, _, suite = _setup(tmp_path)
    result = CliRunner().invoke(app, ["expectations", "init", "--config", str(config)])
    assert result.exit_code == 0, result.output
    written = json.loads(suite.read_text())
    kinds = {e["type"] for e in written["expectations"]}
    assert {"expect_table_row_count_to_be_between", "expect_column_values_to_be_unique"} <= kinds
    assert written["meta"]["target"] == "default" and written["meta"]["id_column"] == "loan_id"
    again = CliRunner().invoke(app, ["expectations", "init", "--config", str(config)])
    assert again.exit_code == 1 and "--force" in again.output


def test_init_on_a_new_file_takes_roles_from_flags(tmp_path: Path) -> None:
    config, _, _ = _setup(tmp_path)
    other = tmp_path / "iris like.csv"
    pd.DataFrame({"k": range(30), "x": [float(i % 7) for i in range(30)], "y": ["a", "b", "c"] * 10}).to_csv(
        other, index=False
    )
    args = ["expectations", "init", "--config", str(config), "--data", str(other), "--target", "y", "--id-column", "k"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    suite = json.loads((tmp_path / "suites" / "iris_like.json").read_text())
    assert suite["meta"]["target"] == "y"


def test_validate_accepts_clean_data_and_quarantines_bad_files(tmp_path: Path) -> None:
    config, data, _ = _setup(tmp_path)
    CliRunner().invoke(app, ["expectations", "init", "--config", str(config)])
    ok = CliRunner().invoke(app, ["expectations", "validate", "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "accepted" in ok.output and "Data Docs: file://" in ok.output

    bad = tmp_path / "landing" / "batch_0009.parquet"
    bad.parent.mkdir()
    frame = pd.read_parquet(next(data.glob("*.parquet")))
    frame.assign(loan_amount=frame["loan_amount"] * 10).to_parquet(bad, index=False)
    args = ["expectations", "validate", "--config", str(config), "--data", str(bad), "--name", "loans"]
    kept = CliRunner().invoke(app, [*args, "--json"])
    assert kept.exit_code == EXIT_REJECTED and bad.exists(), "without --quarantine a check moves nothing"
    payload = json.loads(kept.stdout.strip().splitlines()[-1])
    assert payload["rejected"][0]["batch"] == bad.name and Path(payload["report_path"]).is_file()
    assert any("loan_amount" in f["message"] for f in payload["rejected"][0]["failed_expectations"])
    from components.core.workspace import Workspace
    from components.tracking import registry

    client = registry.connect(Workspace.at(tmp_path / "ws"))
    run = client.get_run(payload["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "rejected"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
    assert "validation/report.json" in logged and "validation/data_docs" in logged

    moved = CliRunner().invoke(app, [*args, "--quarantine"])
    assert moved.exit_code == EXIT_REJECTED and not bad.exists()
    (folder,) = (tmp_path / "ws" / "quarantine" / "loans").iterdir()
    assert (folder / bad.name).is_file() and json.loads((folder / "report.json").read_text())["success"] is False


def test_diff_shows_contract_changes_and_accept_rewrites_the_suite(tmp_path: Path) -> None:
    config, data, suite = _setup(tmp_path)
    CliRunner().invoke(app, ["expectations", "init", "--config", str(config)])
    same = CliRunner().invoke(app, ["expectations", "diff", "--config", str(config)])
    assert same.exit_code == 0 and "nothing to accept" in same.output

    changed = tmp_path / "changed.parquet"
    frame = pd.concat([pd.read_parquet(p) for p in sorted(data.glob("*.parquet"))], ignore_index=True)
    frame.assign(channel="web").to_parquet(changed, index=False)
    args = ["expectations", "diff", "--config", str(config), "--data", str(changed), "--name", "loans"]
    shown = CliRunner().invoke(app, [*args, "--json"])
    assert shown.exit_code == 0, shown.output
    changes = json.loads(shown.stdout.strip().splitlines()[-1])
    assert any(c["column"] == "channel" and c["kind"] == "added" for c in changes)
    assert "channel" not in suite.read_text()
    assert CliRunner().invoke(app, [*args, "--accept"]).exit_code == 0
    assert "channel" in suite.read_text()
