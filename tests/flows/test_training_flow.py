"""The training flow end to end, on a real Prefect API and a real SQLite MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from components.core.workspace import Workspace
from components.data.contract import DataRejected
from components.inference.scoring import decision_threshold, pipeline_of, read_model_info
from components.simulation.simulate import ID_COLUMN, write_batches
from components.tracking import registry
from flows.cli import EXIT_REJECTED, app
from flows.training import training_flow
from tests.conftest import load_model, write_config

pytestmark = pytest.mark.usefixtures("prefect_api")


def _client(config) -> MlflowClient:
    return registry.connect(Workspace.at(config.home))


def test_first_run_promotes_and_records_everything(trained) -> None:
    _, config, result = trained
    client = _client(config)
    champion = registry.get_champion(client, "loans")
    assert champion is not None and champion.version == result.model_version == "1"
    assert champion.promoted_at
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "promoted"
    assert run.data.tags["prefect.flow_run_id"]
    assert len(run.data.tags["data.fingerprint"]) == 16
    assert run.data.tags.get("mlflow.source.git.commit") or registry.git_commit() is None
    assert run.data.params["model.estimator"] == "auto"  # the search spans the families ...
    assert run.data.tags["model.family"] in {"logistic_regression", "hist_gradient_boosting"}  # ... and picked one
    assert run.data.tags["task"] == "binary"
    assert run.data.params["split.test_size"] == "0.2"
    for name in ("roc_auc", "average_precision", "f1", "log_loss", "balanced_accuracy"):
        assert np.isfinite(run.data.metrics[f"test_{name}"])
    assert run.data.metrics["test_roc_auc"] > 0.7
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"data_card.json", "decision.json", "validation", "curation", "label_issues.csv"} <= artifacts
    docs = {a.path for a in client.list_artifacts(result.run_id, "validation/data_docs")}
    assert any(p.endswith(".html") for p in docs), "the Data Docs page travels with the run"
    card = json.loads(Path(client.download_artifacts(result.run_id, "data_card.json")).read_text())
    assert card["rows_before_curation"] >= card["rows_after_curation"] > 0
    assert card["curation"]["deduplication"]["rows_in"] == card["rows_before_curation"]
    assert "credit_score" in card["column_summary"]
    issues = pd.read_csv(client.download_artifacts(result.run_id, "label_issues.csv"))
    assert list(issues.columns) == ["id", "given_label", "predicted_label", "confidence", "given_label_probability"]
    assert run.data.metrics["label_issues"] == len(issues)
    suite = config.validation.suite_dir / "loans.json"
    assert suite.is_file() and json.loads(suite.read_text())["name"] == "loans"
    # 960 training rows is a small table: the served model is refitted on all 1,200 labeled rows,
    # and the model the gate judged (fitted on the 960) is logged beside it for later gates.
    info = read_model_info(champion.uri)
    assert info["refit_rows"] == 1200 and info["gate_model_uri"].startswith("models:/")
    assert run.data.metrics["refit_rows"] == 1200
    gate = registry.load_model(info["gate_model_uri"])
    assert gate is not None and info["gate_model_uri"] != champion.uri


def test_first_run_records_model_selection_and_the_decision(trained) -> None:
    _, config, result = trained
    client = _client(config)
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    for name in ("brier", "precision", "recall", "f1", "roc_auc", "average_precision", "log_loss"):
        assert np.isfinite(metrics[f"test_{name}"]) and np.isfinite(metrics[f"dummy_{name}"])
    assert metrics["test_roc_auc"] > metrics["dummy_roc_auc"] == 0.5
    slices = json.loads(Path(client.download_artifacts(result.run_id, "evaluation/slices.json")).read_text())
    assert any(name.startswith("home_ownership=") for name in slices)
    for name, value in slices.items():
        assert metrics["slice_roc_auc/" + name.replace("=", "_")] == pytest.approx(value)
    assert 0 < metrics["decision_threshold"] < 1 and np.isfinite(metrics["train_gap"])
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    expected = (
        "roc",
        "precision_recall",
        "confusion_matrix",
        "calibration",
        "learning_curve",
        "permutation_importance",
    )
    assert {f"plots/{name}.png" for name in expected} <= plots
    trials = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'", max_results=100
    )
    searched = [t for t in trials if t.data.params["stage"] == "search"]
    assert len(searched) == config.search.trials
    finals = [t for t in trials if t.data.params["stage"] == "final"]  # a small table: finalists on fresh folds
    assert 3 <= len(finals) <= 6 and {t.data.tags["mlflow.runName"][:6] for t in finals} == {"final-"}
    assert all(f"cv_{config.promotion.metric}" in t.data.metrics for t in trials)
    record = json.loads(Path(client.download_artifacts(result.run_id, "decision.json")).read_text())
    assert record["decision"]["promote"] is True
    checks = {c["name"]: c["passed"] for c in record["decision"]["checks"]}
    assert checks["serving"] is True and checks["beats_dummy"] is True and checks["beats_champion"] is None
    assert record["evidence"]["serving"]["latency_ms"] < config.promotion.latency_budget_ms
    version = client.get_model_version("loans", result.model_version)
    assert version.tags["decision"] == "promote"
    assert version.tags["check.serving"].startswith("passed: answered its input example through the compiled")


def test_logged_model_is_the_whole_pipeline_with_signature(trained) -> None:
    _, config, _ = trained
    _client(config)
    import mlflow

    info = mlflow.models.get_model_info("models:/loans@champion")
    columns = [spec.name for spec in info.signature.inputs]
    assert "credit_score" in columns and "region" in columns and "loan_id" not in columns
    model = registry.load_model("models:/loans@champion")
    assert list(pipeline_of(model).named_steps) == ["preprocess", "model"]
    assert 0 < decision_threshold(model) < 1, "the tuned threshold travels inside the model"
    local = mlflow.artifacts.download_artifacts("models:/loans@champion")
    example = pd.DataFrame(mlflow.models.Model.load(local).load_input_example(local))
    assert len(example) == 100 and np.isfinite(model.predict_proba(example)).all()


def test_rerun_on_identical_data_keeps_the_champion(trained) -> None:
    _, config, first = trained
    again = training_flow(config)
    assert not again.promoted
    assert again.failed_checks == ["beats_champion"], again.reason
    assert "the lower bound must exceed" in again.reason
    assert again.metrics["roc_auc"] == pytest.approx(first.metrics["roc_auc"])
    assert registry.get_champion(_client(config), "loans").version == "1"


@pytest.mark.parametrize(
    "breakage",
    [
        lambda frame: frame.drop(columns=["region"]),
        lambda frame: frame.astype({"credit_score": str}),
    ],
    ids=["column removed", "numbers as text"],
)
def test_bad_data_is_rejected_and_the_champion_stays(trained, tmp_path: Path, breakage) -> None:
    config_path, config, _ = trained
    client = _client(config)
    versions_before = len(client.search_model_versions("name='loans'"))
    source = Path(config.data.source)
    frame = pd.concat([pd.read_parquet(p) for p in sorted(source.glob("*.parquet"))], ignore_index=True)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    breakage(frame).to_parquet(bad_dir / "batch.parquet", index=False)
    bad_config = config.with_overrides(data={"source": str(bad_dir)})
    with pytest.raises(DataRejected) as rejected:
        training_flow(bad_config)
    assert rejected.value.report_path and rejected.value.report_path.is_file()
    assert not rejected.value.report.success
    assert len(client.search_model_versions("name='loans'")) == versions_before
    assert registry.get_champion(client, "loans").version == "1"
    (folder,) = rejected.value.quarantined
    assert not (bad_dir / "batch.parquet").exists(), "the rejected batch left the source"
    assert (folder / "batch.parquet").is_file() and (folder / "report.json").is_file()
    assert folder.is_relative_to(Workspace.at(config.home).quarantine)

    breakage(frame).to_parquet(bad_dir / "batch.parquet", index=False)
    args = ["run", "--config", str(config_path), "--data", str(bad_dir), "--target", "default", "--name", "loans"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == EXIT_REJECTED, result.output
    assert "rejected" in result.output and "quarantined:" in result.output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["rejected"] and Path(outcome["quarantined"][0]).is_dir()
    assert registry.get_champion(client, "loans").version == "1"


def test_a_handful_of_impossible_rows_is_set_aside_and_the_rest_trains(trained, tmp_path: Path) -> None:
    _, config, _ = trained
    source = tmp_path / "data"
    write_batches(source, 2, 600, seed=7)
    newest = tmp_path / "data" / "batch_0002.parquet"
    fresh = pd.read_parquet(next(iter(sorted(Path(config.data.source).glob("*.parquet"))))).head(300)
    fresh = fresh.assign(**{ID_COLUMN: fresh[ID_COLUMN] + 10_000})
    fresh.loc[fresh.index[:3], "loan_amount"] = -5_000.0  # never negative in the reference: impossible
    fresh.loc[fresh.index[3], "purpose"] = "crypto"  # a category never seen
    fresh.to_parquet(newest, index=False)
    result = training_flow(config.with_overrides(data={"source": str(source)}))
    run = _client(config).get_run(result.run_id)
    assert run.data.metrics["rows_set_aside"] == 4 and result.data["rows_set_aside"] == 4
    assert run.data.tags["validation.judgement"] in {"clean", "drift"}
    (folder,) = [f for f in (Workspace.at(config.home).quarantine / "loans").iterdir() if f.name.endswith("-rows")]
    assert "batch_0002" in folder.name and newest.is_file(), "the batch stays; only its rows are copied aside"
    rows = pd.read_csv(folder / "rows.csv")
    assert rows["batch_row"].tolist() == [0, 1, 2, 3]
    assert rows["set_aside_reason"].str.contains("loan_amount: expect_column_values_to_be_between").sum() == 3
    assert "purpose: expect_column_values_to_be_in_set, got 'crypto'" in rows["set_aside_reason"].iloc[3]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["rows"] == 4 and manifest["mlflow_run_id"] == result.run_id
    card = json.loads(Path(_client(config).download_artifacts(result.run_id, "data_card.json")).read_text())
    assert card["rows_before_curation"] == 1200 + 300 - 4


def test_cli_run_json_contract(trained) -> None:
    config_path, _, _ = trained
    result = CliRunner().invoke(app, ["run", "--config", str(config_path), "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(outcome) == {
        "run_id",
        "model_name",
        "model_version",
        "promoted",
        "reason",
        "metrics",
        "dry_run",
        "would_promote",
        "awaiting_approval",
        "challenger",
        "failed_checks",
        "task",
        "metric",
        "new_model",
        "data",
    }
    assert outcome["data"]["judgement"] == "clean" and outcome["data"]["rows_set_aside"] == 0
    assert outcome["model_name"] == "loans" and outcome["promoted"] is False
    assert (outcome["task"], outcome["metric"], outcome["new_model"]) == ("binary", "roc_auc", False)


def test_status_reports_the_champion(trained) -> None:
    config_path, _, result = trained
    status = CliRunner().invoke(app, ["status", "--config", str(config_path), "--json"])
    assert status.exit_code == 0, status.output
    info = json.loads(status.stdout)
    (model,) = info["models"]
    assert model["name"] == "loans" and model["version"] == "1"
    assert model["metrics"]["roc_auc"] == pytest.approx(result.metrics["roc_auc"])


def test_unseen_multiclass_csv_trains_without_code_change(prefect_api, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 800
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "sample": np.arange(n),
            "x1": x1,
            "x2": x2,
            "shade": rng.choice(["light", "dark"], n),
            "y": np.select([x1 > 0.5, x2 > 0.3], ["high", "mid"], "low"),
        }
    )
    frame.to_csv(tmp_path / "Some Other.csv", index=False)
    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", tmp_path / "unused", tmp_path / "suites")
    args = [
        "run",
        "--config",
        str(config_path),
        "--data",
        str(tmp_path / "Some Other.csv"),
        "--target",
        "y",
        "--id-column",
        "sample",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["model_name"] == "some_other" and outcome["promoted"] is True, outcome["reason"]
    assert outcome["metrics"]["balanced_accuracy"] > 0.8
    assert (tmp_path / "suites" / "some_other.json").is_file()

    scored = tmp_path / "scored.parquet"
    score = CliRunner().invoke(
        app,
        [
            "score",
            "--config",
            str(config_path),
            "--name",
            "some_other",
            "--input",
            str(tmp_path / "Some Other.csv"),
            "--output",
            str(scored),
            "--id-column",
            "sample",
        ],
    )
    assert score.exit_code == 0, score.output
    out = pd.read_parquet(scored)
    assert len(out) == n and set(out["prediction"]) <= {"high", "mid", "low"}

    broken = frame.drop(columns=["x2"])
    broken.to_csv(tmp_path / "Some Other.csv", index=False)
    assert CliRunner().invoke(app, args).exit_code == EXIT_REJECTED


def test_batch_score_writes_one_prediction_per_row(trained, tmp_path: Path) -> None:
    config_path, _, _ = trained
    batch = write_batches(tmp_path / "new", 1, 300, seed=99)[0]
    out = tmp_path / "scores.parquet"
    scored = CliRunner().invoke(
        app, ["score", "--config", str(config_path), "--input", str(batch), "--output", str(out)]
    )
    assert scored.exit_code == 0, scored.output
    frame = pd.read_parquet(out)
    source = pd.read_parquet(batch)
    assert frame["loan_id"].tolist() == source["loan_id"].tolist()
    assert frame["prediction"].isin([0, 1]).all() and frame["probability"].between(0, 1).all()
    assert (frame["model_version"] == "1").all()


def test_missing_data_is_an_error_not_a_rejection(prefect_api, tmp_path: Path) -> None:
    config_path = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", tmp_path / "absent", tmp_path / "suites")
    result = CliRunner().invoke(app, ["run", "--config", str(config_path)])
    assert result.exit_code == 1
    assert "data source not found" in result.output
    assert load_model(config_path).home == tmp_path / "ws"


def test_drop_outliers_and_exclude_flagged_labels_shrink_only_the_training_split(trained) -> None:
    _, config, _ = trained
    strict = config.with_overrides(curation={"outlier_policy": "drop"}, label_review={"action": "exclude"})
    result = training_flow(strict)
    run = _client(config).get_run(result.run_id)
    metrics = run.data.metrics
    assert metrics["outlier_rows_dropped_from_training"] > 0
    assert metrics["label_issues_excluded"] == metrics["label_issues"] > 0
    assert run.data.params["curation.outlier_policy"] == "drop"
    assert np.isfinite(result.metrics["roc_auc"])
    assert registry.get_champion(_client(config), "loans").version in {"1", result.model_version}
