"""One base class for the errors a user can fix: the CLI reports them without a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from components.core.config import ConfigError
from components.core.errors import UserError
from components.data.contract import ContractError
from components.data.extract import ExtractionError
from components.inference.scoring import InputError
from components.modeling.prepare import PreparationError
from components.modeling.tasks import TargetError
from components.modeling.train import TrainingError
from components.monitoring.monitor import MonitoringError
from components.tracking.registry import RegistryError
from flows.cli import app
from flows.deploy import DeployError
from flows.prefect_server import PrefectServerError
from serving.build import BuildError
from serving.schema import SchemaError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ConfigError, ValueError),
        (ContractError, ValueError),
        (ExtractionError, ValueError),
        (InputError, ValueError),
        (PreparationError, ValueError),
        (TargetError, ValueError),
        (TrainingError, ValueError),
        (MonitoringError, ValueError),
        (SchemaError, ValueError),
        (DeployError, ValueError),
        (RegistryError, RuntimeError),
        (BuildError, RuntimeError),
        (PrefectServerError, RuntimeError),
    ],
)
def test_user_errors_share_one_base_and_keep_their_builtin_one(error: type[Exception], builtin: type) -> None:
    assert issubclass(error, UserError) and issubclass(error, builtin)
    assert error("x").exit_status == 1


def test_a_user_error_is_one_line_without_a_traceback(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "table.csv").write_text("a,b\n1,2\n3,4\n")
    result = CliRunner().invoke(app, ["init", "--data", str(tmp_path / "table.csv"), "--target", "nope"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "nope" in result.output
