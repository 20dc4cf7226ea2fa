"""Models as first-class units: project defaults layered under each model's own file, and what
`mlops init` infers about a new model's data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.core.config import ConfigError
from components.core.modelfile import detect_id_column, detect_time_column, propose_model, render_model_file
from components.core.project import ModelNotFound, load_project, models_with_columns


def _project(tmp_path: Path, project: str, **models: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "mlops.yaml"
    path.write_text(project)
    (tmp_path / "models").mkdir(exist_ok=True)
    for name, text in models.items():
        (tmp_path / "models" / f"{name}.yaml").write_text(text)
    return path


def test_each_model_layers_its_own_settings_over_the_project_defaults(tmp_path: Path) -> None:
    path = _project(
        tmp_path,
        "home: ws\nsearch:\n  trials: 7\n  cv_folds: 4\n",
        prices="task: regression\ndata:\n  source: data/p.csv\n  target: price\nsearch:\n  trials: 3\n",
        churn="data:\n  source: '{home}/c'\n  target: churned\nevaluation:\n  slices: [plan]\n",
    )
    project = load_project(path, environ={})
    assert project.model_names() == ["churn", "prices"]
    prices, churn = project.model_config("prices"), project.model_config("churn")
    assert (prices.search.trials, prices.search.cv_folds, prices.task) == (3, 4, "regression")
    assert (churn.search.trials, churn.task, churn.evaluation.slices) == (7, None, ("plan",))
    assert prices.evaluation.slices == ()  # nothing of one model leaks into another
    assert prices.data.name == "prices" and prices.data.source == str(tmp_path / "data" / "p.csv")
    assert prices.home == churn.home == tmp_path / "ws"
    env = load_project(path, environ={"MLOPS__SEARCH__TRIALS": "11", "MLOPS_HOME": str(tmp_path / "h")})
    assert env.model_config("prices").search.trials == 11 and env.model_config("churn").home == tmp_path / "h"


@pytest.mark.parametrize(
    ("project", "fragment"),
    [
        ("data:\n  source: x.csv\n  target: y\n", "data describe"),
        ("evaluation:\n  slices: [region]\n", "evaluation.slices"),
        ("promotion:\n  metric: roc_auc\n", "promotion.metric"),
        ("assumptions: [a]\n", "assumptions"),
    ],
)
def test_dataset_keys_in_the_project_file_are_refused_naming_where_they_belong(
    tmp_path: Path, project: str, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_project(_project(tmp_path, project), environ={})
    assert "models/<name>.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("home: elsewhere\n", "belong"),
        ("data:\n  name: other\n", "data.name is 'other'"),
        ("model:\n  estimator: xgboost\n", "model.estimator"),
    ],
)
def test_a_broken_model_file_is_named(tmp_path: Path, model: str, fragment: str) -> None:
    project = load_project(_project(tmp_path, "seed: 1\n", one=model), environ={})
    with pytest.raises(ConfigError, match=fragment):
        project.model_config("one")


def test_commands_default_to_the_only_model_and_name_the_choices_otherwise(tmp_path: Path) -> None:
    path = _project(tmp_path, "seed: 1\n")
    with pytest.raises(ModelNotFound, match="mlops init"):
        load_project(path, environ={}).resolve_name(None)
    (tmp_path / "models" / "a.yaml").write_text("data:\n  target: y\n")
    assert load_project(path, environ={}).resolve_name(None) == "a"
    (tmp_path / "models" / "b.yaml").write_text("data:\n  target: y\n")
    with pytest.raises(ModelNotFound, match=r"2 models are configured \(a, b\): `mlops serve` needs --name"):
        load_project(path, environ={}).resolve_name(None, "`mlops serve`")
    with pytest.raises(ModelNotFound, match="configured models: a, b"):
        load_project(path, environ={}).model_config("c")
    with pytest.raises(ConfigError, match="may hold letters"):
        load_project(path, environ={}).resolve_name("../etc")


def test_a_model_without_a_file_takes_its_column_roles_from_its_contract(tmp_path: Path) -> None:
    path = _project(tmp_path, "validation:\n  suite_dir: suites\n")
    (tmp_path / "suites").mkdir()
    suite = {
        "name": "adhoc",
        "expectations": [
            {"type": "expect_table_columns_to_match_ordered_list", "kwargs": {"column_list": ["k", "x", "y"]}}
        ],
        "meta": {"target": "y", "id_column": "k", "task": "regression"},
    }
    (tmp_path / "suites" / "adhoc.json").write_text(json.dumps(suite))
    project = load_project(path, environ={})
    config = project.config_for("adhoc")
    assert (config.data.name, config.data.target, config.data.id_column, config.task) == (
        "adhoc",
        "y",
        "k",
        "regression",
    )
    assert project.contracted_models() == ["adhoc"]
    assert models_with_columns(project, ["k", "x", "y"], "y") == ["adhoc"]
    assert models_with_columns(project, ["k", "x", "y", "a", "b", "c"], "y") == []  # another table
    assert models_with_columns(project, ["k", "x", "y"], "x") == []


def test_without_a_project_file_the_code_defaults_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    project = load_project(None, environ={})
    assert project.config_file is None and project.root == tmp_path.resolve() and project.model_names() == []
    assert project.base().home == tmp_path.resolve() / ".mlops"


def test_the_workspace_and_contracts_default_to_the_project_folder_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _project(tmp_path / "repo", "seed: 1\n", m="data:\n  target: y\n")
    monkeypatch.chdir(tmp_path)  # a command run from elsewhere
    config = load_project(path, environ={}).model_config("m")
    assert config.home == tmp_path / "repo" / ".mlops"
    assert config.validation.suite_dir == tmp_path / "repo" / "expectations"


def _table(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "Unnamed: 0": np.arange(n),
            "customerID": [f"C{i:05d}" for i in range(n)],
            "signed_up": pd.date_range("2025-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "plan": rng.choice(["basic", "pro", "team"], n),
            "seats": rng.integers(1, 50, n),
            "monthly_spend": rng.gamma(2, 30, n).round(2),
            "churned": rng.choice(["yes", "no"], n),
        }
    )


def test_init_finds_ids_times_task_and_slices() -> None:
    frame = _table()
    assert detect_id_column(frame, "churned").column == "customerID"
    assert detect_id_column(frame.drop(columns="customerID"), "churned").column == "Unnamed: 0"
    assert detect_time_column(frame, "churned", "customerID").column == "signed_up"
    proposal = propose_model(frame, "churn", "data/churn.csv", "churned")
    assert proposal.task.task == "binary"
    assert (proposal.id_column.column, proposal.time_column.column) == ("customerID", "signed_up")
    assert "plan" in proposal.categorical and proposal.slices == ("plan",)
    assert "Unnamed: 0" in proposal.numeric  # a second row-number column is not the id: left for review


def test_the_written_model_file_is_a_valid_model_of_the_project(tmp_path: Path) -> None:
    proposal = propose_model(_table(), "churn", "data/churn.csv", "churned", task="binary")
    text = render_model_file(proposal, "roc_auc", "expectations/churn.json")
    assert "# inferred" in text and "id-like name" in text
    path = _project(tmp_path, "seed: 1\n", churn=text)
    config = load_project(path, environ={}).model_config("churn")
    assert (config.task, config.data.target, config.data.id_column, config.data.time_column) == (
        "binary",
        "churned",
        "customerID",
        "signed_up",
    )
    assert config.split.strategy == "time" and config.promotion.metric == "roc_auc"
    assert config.evaluation.slices == ("plan",)


def test_mlops_config_prints_the_effective_settings_defaults_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml
    from typer.testing import CliRunner

    from flows.cli import app

    path = _project(tmp_path, "home: ws\nsearch:\n  trials: 7\n", prices="data:\n  source: p.csv\n  target: price\n")
    monkeypatch.setenv("MLOPS__SEARCH__CV_FOLDS", "4")
    shown = CliRunner().invoke(app, ["config", "--config", str(path), "--name", "prices"])
    assert shown.exit_code == 0, shown.output
    settings = yaml.safe_load(shown.stdout)
    assert settings["search"]["trials"] == 7 and settings["search"]["cv_folds"] == 4  # file, then environment
    assert settings["data"]["target"] == "price" and settings["promotion"]["confidence"] == 0.95  # the code's default
    project = CliRunner().invoke(app, ["config", "--config", str(path), "--json"])
    assert project.exit_code == 0 and json.loads(project.stdout)["data"]["target"] is None
    missing = CliRunner().invoke(app, ["config", "--config", str(path), "--name", "nope"])
    assert missing.exit_code == 1 and "known models: prices" in missing.output
