"""A user's own tables, of every task, side by side in one project: `mlops init`, then each model by name
through training, the gate, status, batch scoring, monitoring, serving and deployment, with the
README's commands. The tables are real public ones that ship with scikit-learn."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import EXIT_REJECTED, app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _tables(folder: Path) -> dict[str, Path]:
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    diabetes = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    wine = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    wine["cultivar"] = wine["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    cancer = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "benign"})
    cancer.columns = [c.replace(" ", "_") for c in cancer.columns]
    cancer.insert(0, "patient_id", np.arange(10_000, 10_000 + len(cancer)))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in (("diabetes", diabetes), ("wine", wine), ("cancer", cancer)):
        holdout = frame.sample(frac=0.2, random_state=0)
        frame.drop(index=holdout.index).to_csv(folder / f"{name}.csv", index=False)
        holdout.to_csv(folder / f"{name}_new.csv", index=False)
        paths[name] = folder / f"{name}.csv"
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("project")
    (root / "mlops.yaml").write_text(
        "home: ws\nseed: 3\nsearch:\n  trials: 4\nevaluation:\n  plots: false\nprefect:\n  server: ephemeral\n"
        "monitoring:\n  min_rows: 20\n"
    )
    return root / "mlops.yaml", _tables(root / "data")


def _mlops(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [args[0], "--config", str(config), *args[1:]])
    return result.exit_code, result.stdout, result.output


@pytest.fixture(scope="module")
def initialised(project: tuple[Path, dict[str, Path]]) -> tuple[Path, dict[str, Path]]:
    config, tables = project
    for name, target in (("diabetes", "progression"), ("wine", "cultivar"), ("cancer", "benign")):
        code, _, output = _mlops(config, "init", "--data", str(tables[name]), "--target", target)
        assert code == 0, output
    return project


def test_init_infers_each_model_and_writes_its_reviewable_files(initialised) -> None:
    config, _ = initialised
    root = config.parent
    from components.core.project import load_project

    project = load_project(config, environ={})
    assert project.model_names() == ["cancer", "diabetes", "wine"]
    tasks = {name: project.model_config(name).task for name in project.model_names()}
    assert tasks == {"cancer": "binary", "diabetes": "regression", "wine": "multiclass"}
    assert project.model_config("cancer").data.id_column == "patient_id"
    assert project.model_config("diabetes").promotion.metric == "rmse"
    assert project.model_config("diabetes").data.source == str(root / "data" / "diabetes.csv")
    assert "source: data/diabetes.csv" in (root / "models" / "diabetes.yaml").read_text()  # relative, for git
    suite = json.loads((root / "expectations" / "diabetes.json").read_text())
    assert suite["meta"]["task"] == "regression"
    code, _, output = _mlops(config, "init", "--data", str(root / "data" / "wine.csv"), "--target", "cultivar")
    assert code == 1 and "exists" in output and "--force" in output


def test_every_command_that_needs_one_model_names_the_choices(initialised) -> None:
    config, _ = initialised
    for command in (("run",), ("serve",), ("monitor",), ("score", "--input", "x.csv", "--output", "y.parquet")):
        code, _, output = _mlops(config, *command)
        assert code == 1 and "3 models are configured (cancer, diabetes, wine)" in output, (command, output)


@pytest.fixture(scope="module")
def trained(initialised) -> tuple[Path, dict[str, Path], dict[str, dict]]:
    config, tables = initialised
    outcomes = {}
    for name in ("diabetes", "wine", "cancer"):
        code, stdout, output = _mlops(config, "run", "--name", name, "--json")
        assert code == 0, output
        outcomes[name] = json.loads(stdout.strip().splitlines()[-1])
    return config, tables, outcomes


def test_each_task_trains_gates_and_promotes_with_its_own_metric(trained) -> None:
    _, _, outcomes = trained
    assert {name: (o["task"], o["metric"], o["promoted"], o["new_model"]) for name, o in outcomes.items()} == {
        "diabetes": ("regression", "rmse", True, False),
        "wine": ("multiclass", "balanced_accuracy", True, False),
        "cancer": ("binary", "roc_auc", True, False),
    }
    regression = outcomes["diabetes"]["metrics"]
    assert regression["r2"] > 0.3 and abs(regression["interval_coverage"] - 0.9) < 0.1
    assert outcomes["wine"]["metrics"]["accuracy"] > 0.85 and outcomes["cancer"]["metrics"]["roc_auc"] > 0.95


def test_status_lists_three_models_side_by_side(trained) -> None:
    config, _, _ = trained
    code, stdout, output = _mlops(config, "status", "--json")
    assert code == 0, output
    models = {m["name"]: m for m in json.loads(stdout)["models"]}
    assert {name: (m["task"], m["version"], m["configured"]) for name, m in models.items()} == {
        "cancer": ("binary", "1", True),
        "diabetes": ("regression", "1", True),
        "wine": ("multiclass", "1", True),
    }
    code, stdout, output = _mlops(config, "status")
    assert code == 0 and "every metric: mlops status --json" in " ".join(stdout.split()), output
    # The table shows each model's gate metric first, then two its task's users look at.
    from flows.cli.status import _headline

    metrics = models["diabetes"]["metrics"]
    assert _headline(metrics, "regression", "rmse")[0] == f"rmse={metrics['rmse']:.4f}"
    assert [m.split("=")[0] for m in _headline(metrics, "regression", "mae")] == [
        "mae",
        "rmse",
        "r2",
        "interval_coverage",
    ]


def test_batch_scores_of_each_task(trained, tmp_path: Path) -> None:
    config, tables, _ = trained
    answers = {}
    for name, target in (("diabetes", "progression"), ("wine", "cultivar"), ("cancer", "benign")):
        new = pd.read_csv(tables[name].with_name(f"{name}_new.csv")).drop(columns=[target])
        new.to_csv(tmp_path / f"{name}.csv", index=False)
        out = tmp_path / f"{name}.parquet"
        code, _, output = _mlops(
            config, "score", "--name", name, "--input", str(tmp_path / f"{name}.csv"), "--output", str(out)
        )
        assert code == 0, output
        answers[name] = pd.read_parquet(out)
    regression = answers["diabetes"]
    assert {"prediction", "lower", "upper"} <= set(regression.columns)
    assert (regression["lower"] < regression["prediction"]).all() and (
        regression["prediction"] < regression["upper"]
    ).all()
    wine = answers["wine"]
    assert {"probability_barbera", "probability_barolo", "probability_grignolino"} <= set(wine.columns)
    assert answers["cancer"]["patient_id"].is_unique and answers["cancer"]["probability"].between(0, 1).all()


def test_a_corrupt_batch_of_an_existing_model_is_rejected_against_its_contract(trained, tmp_path: Path) -> None:
    config, tables, _ = trained
    corrupt = pd.read_csv(tables["diabetes"].with_name("diabetes_new.csv"))
    corrupt["bmi"] = corrupt["bmi"] * 1000  # a unit bug
    corrupt.to_csv(tmp_path / "diabetes_week2.csv", index=False)
    code, stdout, output = _mlops(
        config, "run", "--name", "diabetes", "--data", str(tmp_path / "diabetes_week2.csv"), "--json"
    )
    assert code == EXIT_REJECTED, output
    outcome = json.loads(stdout.strip().splitlines()[-1])
    assert outcome["rejected"] and outcome["model_name"] == "diabetes" and outcome["new_model"] is False
    assert "bmi" in output


def test_a_file_of_an_existing_models_columns_is_not_made_a_new_model(trained, tmp_path: Path) -> None:
    config, tables, _ = trained
    copy = tmp_path / "cancer_export.csv"
    copy.write_text(tables["cancer"].read_text())
    code, _, output = _mlops(config, "run", "--data", str(copy), "--target", "benign")
    assert code == 1 and "has the columns of model 'cancer'" in output and "--name cancer" in output


def test_an_ad_hoc_model_says_it_is_new_and_a_target_that_fits_no_task_registers_nothing(trained, tmp_path) -> None:
    config, _, _ = trained
    rng = np.random.default_rng(0)
    other = pd.DataFrame({"a": rng.normal(size=300), "b": rng.choice(["x", "y"], 300)})
    other["y"] = (other["a"] + rng.normal(0, 0.5, 300) > 0).astype(int)
    other.to_csv(tmp_path / "other.csv", index=False)
    code, stdout, output = _mlops(config, "run", "--data", str(tmp_path / "other.csv"), "--target", "y", "--json")
    assert code == 0, output
    assert "new model 'other'" in output and json.loads(stdout.strip().splitlines()[-1])["new_model"] is True
    other.assign(y=1, c=0.5).to_csv(tmp_path / "flat.csv", index=False)
    code, _, output = _mlops(config, "run", "--data", str(tmp_path / "flat.csv"), "--target", "y")
    assert code == 1 and "constant" in output
    assert not (config.parent / "expectations" / "flat.json").exists()
    _, stdout, _ = _mlops(config, "status", "--json")
    assert {m["name"] for m in json.loads(stdout)["models"]} == {"cancer", "diabetes", "wine", "other"}


def test_each_model_is_monitored_by_name(trained) -> None:
    config, tables, _ = trained
    code, stdout, output = _mlops(
        config,
        "monitor",
        "--name",
        "diabetes",
        "--data",
        str(tables["diabetes"].with_name("diabetes_new.csv")),
        "--retrain",
        "off",
        "--json",
    )
    assert code == 0, output
    verdict = json.loads(stdout.strip().splitlines()[-1])
    assert verdict["model_name"] == "diabetes" and verdict["verdict"] in ("stable", "watching")
    assert verdict["decay"]["metric"] == "rmse"  # the labels came with the batch
    estimated = verdict["estimated"]  # ... and beside it the RMSE estimated from the held-out errors (DLE)
    assert estimated["metric"] == "rmse" and estimated["estimated"] and estimated["current"] > 0
    code, stdout, output = _mlops(
        config,
        "monitor",
        "--name",
        "wine",
        "--data",
        str(tables["wine"].with_name("wine_new.csv")),
        "--retrain",
        "off",
        "--json",
    )
    assert code == 0, output and json.loads(stdout.strip().splitlines()[-1])["model_name"] == "wine"


def test_every_configured_model_is_deployed_with_its_own_triggers(trained, monkeypatch) -> None:
    config, _, _ = trained
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, stdout, output = _mlops(config, "deploy", "--dry-run", "--json")
    assert code == 0, output
    models = json.loads(stdout.strip().splitlines()[-1])["models"]
    assert [m["model_name"] for m in models] == ["cancer", "diabetes", "wine"]
    for info in models:
        training = info["deployments"][0]
        assert training["name"] == f"training-job/{info['model_name']}"
        assert training["parameters"]["model"] == info["model_name"]
        assert info["landing"] is None and "landing folder off" in info["notes"][-1]  # a file has no folder


def _wait_ready(client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/metadata").text
        time.sleep(0.1)


@pytest.mark.parametrize("name", ["diabetes", "wine"])
def test_the_service_answers_each_tasks_shape(trained, name: str, monkeypatch) -> None:
    from starlette.testclient import TestClient

    from serving.service import create_service, settings_from_environment

    config, tables, _ = trained
    monkeypatch.setenv("MLOPS_CONFIG", str(config))
    monkeypatch.setenv("MLOPS_MODEL_NAME", name)
    monkeypatch.setenv("MLOPS__SERVING__METRICS", "false")  # one Prometheus registry per process
    target = {"diabetes": "progression", "wine": "cultivar"}[name]
    rows = json.loads(pd.read_csv(tables[name]).drop(columns=[target]).head(3).to_json(orient="records"))
    with TestClient(create_service(settings_from_environment()).to_asgi()) as client:
        _wait_ready(client)
        body = client.post("/predict", json={"rows": rows}).json()
        meta = client.get("/metadata").json()
    if name == "diabetes":
        assert meta["task"] == "regression" and meta["interval"]["coverage"] == 0.9
        assert body["interval_coverage"] == 0.9 and len(body["intervals"]) == 3
        assert all(
            low < value < high for value, (low, high) in zip(body["predictions"], body["intervals"], strict=True)
        )
    else:
        assert meta["task"] == "multiclass"
        assert all(set(p) == {"barbera", "barolo", "grignolino"} for p in body["probabilities"])
        assert all(abs(sum(p.values()) - 1) < 1e-9 for p in body["probabilities"])
        assert body["predictions"] == [max(p, key=p.get) for p in body["probabilities"]]
