from pathlib import Path

import pytest

from components.core.config import ConfigError, PipelineConfig, dataset_name, load_config, resolve_source


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})
    assert config.home == Path(".mlops")
    assert config.model.estimator == "auto"
    assert config.model.families == ("linear", "hist_gradient_boosting")


def test_yaml_paths_resolve_against_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "conf" / "mlops.yaml"
    cfg.parent.mkdir()
    cfg.write_text("home: ws\ndata:\n  source: data/train.csv\n  target: y\nvalidation:\n  suite_dir: exp\n")
    config = load_config(cfg, environ={})
    assert config.home == tmp_path / "conf" / "ws"
    assert config.data.source == str(tmp_path / "conf" / "data" / "train.csv")
    assert config.validation.suite_dir == tmp_path / "conf" / "exp"


def test_home_placeholder_and_urls_are_left_alone(tmp_path: Path) -> None:
    cfg = tmp_path / "mlops.yaml"
    cfg.write_text("data:\n  source: '{home}/data'\n  target: y\n")
    config = load_config(cfg, environ={"MLOPS_HOME": str(tmp_path / "h")})
    assert resolve_source(config, config.home) == f"{tmp_path / 'h'}/data"
    cfg.write_text("data:\n  source: 'sqlite:///x.db'\n  query: select 1\n  target: y\n")
    assert load_config(cfg, environ={}).data.source == "sqlite:///x.db"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "mlops.yaml"
    cfg.write_text("promotion:\n  min_score: 0.5\n")
    config = load_config(
        cfg, environ={"MLOPS__PROMOTION__MIN_SCORE": "0.8", "MLOPS__MODEL__ESTIMATOR": "random_forest"}
    )
    assert config.promotion.min_score == 0.8
    assert config.model.estimator == "random_forest"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model:\n  estimator: xgboost\n", "model.estimator"),
        ("split:\n  test_size: 1.5\n", "split.test_size"),
        ("promotion:\n  typo: 1\n", "promotion.typo"),
        ("- a list\n", "mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_config_names_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    cfg = tmp_path / "mlops.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(cfg, environ={})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_dataset_name_derives_from_source() -> None:
    config = PipelineConfig.model_validate({"data": {"source": "/data/Credit Scores-2024.csv", "target": "y"}})
    assert dataset_name(config) == "credit_scores_2024"
    named = config.with_overrides(data={"name": "credit"})
    assert dataset_name(named) == "credit"


def test_missing_target_is_reported() -> None:
    config = PipelineConfig.model_validate({"data": {"source": "x.csv"}})
    with pytest.raises(ConfigError, match="target"):
        resolve_source(config, Path("."))


def test_workspaces_do_not_pin_each_other_but_a_user_server_wins(tmp_path, monkeypatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; that must not redirect the next workspace."""
    from components.core.workspace import Workspace
    from components.tracking import registry

    first, second = Workspace.at(tmp_path / "a"), Workspace.at(tmp_path / "b")
    registry.connect(first)
    assert registry.tracking_uri(second) == second.tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert registry.tracking_uri(second) == "http://mlflow.internal:5000"


def test_environment_values_read_like_yaml_and_unknown_sections_are_refused() -> None:
    config = load_config(
        None,
        environ={
            "MLOPS__MODEL__FAMILIES": "[linear, random_forest]",
            "MLOPS__PROMOTION__FLOORS": "{recall: 0.5}",
            "MLOPS__SERVING__PREDICTION_LOG__ENABLED": "false",
            "MLOPS__DATA__ID_COLUMN": "null",
            "MLOPS__DATA__NAME": "2024",  # a string field keeps digits as text
            "MLOPS__SEED": "7",
        },
    )
    assert config.model.families == ("linear", "random_forest")
    assert config.promotion.floors == {"recall": 0.5}
    assert config.serving.prediction_log.enabled is False
    assert config.data.id_column is None and config.data.name == "2024" and config.seed == 7
    with pytest.raises(ConfigError, match="MLOPS__SEARC__TRIALS"):
        load_config(None, environ={"MLOPS__SEARC__TRIALS": "3"})
    with pytest.raises(ConfigError, match=r"search\.trials"):
        load_config(None, environ={"MLOPS__SEARCH__TRIALS": "many"})


def test_the_project_file_restates_no_default() -> None:
    """One set of defaults, in code: the repository's mlops.yaml sets only the workspace's folders."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    written = yaml.safe_load((repo / "mlops.yaml").read_text())
    assert set(written) <= {"home", "models_dir", "validation"}
    assert set(written.get("validation", {})) <= {"suite_dir"}
