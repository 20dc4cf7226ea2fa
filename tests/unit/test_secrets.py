"""Passwords never reach what the project writes or shows; the workspace is its owner's only."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from components.core.config import DataConfig, PipelineConfig
from components.core.environment import private_files
from components.core.secrets import PASSWORD_VARIABLE, install_log_redaction, redact, with_password
from components.core.workspace import Workspace
from components.data.extract import ExtractionError, read_sql
from components.tracking import registry

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://ml:s3cr3t@db:5432/loans", "postgresql://ml:***@db:5432/loans"),
        (
            "postgresql+psycopg://ml:p%40ss@db/loans?sslmode=require",
            "postgresql+psycopg://ml:***@db/loans?sslmode=require",
        ),
        ("https://:tok3n@mlflow.example.com", "https://:***@mlflow.example.com"),
        ("mssql+pyodbc://db/x?driver=ODBC&PWD=hunter2&x=1", "mssql+pyodbc://db/x?driver=ODBC&PWD=***&x=1"),
        ("cannot connect to mysql://u:pw@h/db: refused", "cannot connect to mysql://u:***@h/db: refused"),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
        ("data/loans.csv", "data/loans.csv"),
        ("postgresql://ml@db/loans", "postgresql://ml@db/loans"),
        ("a=1, b=2", "a=1, b=2"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_password_comes_from_the_environment() -> None:
    assert with_password("postgresql://ml@db/loans", {PASSWORD_VARIABLE: "p@ss/w"}) == (
        "postgresql://ml:p%40ss%2Fw@db/loans"
    )
    # a URL with its own password, or without a user, is left as it is
    assert with_password("postgresql://ml:own@db/x", {PASSWORD_VARIABLE: "env"}) == "postgresql://ml:own@db/x"
    assert with_password("sqlite:///x.db", {PASSWORD_VARIABLE: "env"}) == "sqlite:///x.db"
    assert with_password("postgresql://ml@db/x", {}) == "postgresql://ml@db/x"


def test_config_leaves_the_process_without_the_password() -> None:
    url = f"postgresql://ml:{SECRET}@db/loans"
    config = PipelineConfig(data=DataConfig(source=url, query="select 1", target="y"))
    assert config.data.source == url  # the process itself still connects with it
    assert config.model_dump()["data"]["source"] == url
    assert SECRET not in config.model_dump_json()
    assert SECRET not in json.dumps(registry.flatten_config(config))


def test_database_errors_name_the_source_without_its_password() -> None:
    with pytest.raises(ExtractionError) as caught:
        read_sql(f"postgresql+nosuchdriver://ml:{SECRET}@127.0.0.1:1/loans", "select 1")
    assert SECRET not in str(caught.value)
    assert "ml:***@" in str(caught.value)


def test_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("anything.at.all").info("extracting from %s", f"postgresql://ml:{SECRET}@db/x")
    assert SECRET not in caplog.text
    assert "postgresql://ml:***@db/x" in caplog.text


def test_quarantine_manifest_redacts_the_source(tmp_path: Path) -> None:
    from components.data.extract import Batch
    from components.data.quarantine import SetAside, quarantine_rows

    frame = pd.DataFrame({"x": [1, 2]})
    rows = frame.assign(set_aside_reason=["x: below 0", "x: below 0"])
    set_aside = SetAside(Batch(name="query", path=None, frame=frame), rows)
    folder = quarantine_rows(tmp_path, "loans", set_aside, source=f"postgresql://ml:{SECRET}@db/x")
    assert SECRET not in (folder / "manifest.json").read_text()


def test_workspace_is_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        shared = tmp_path / "ws"
        shared.mkdir(mode=0o755)
        os.chmod(shared, 0o755)
        workspace = Workspace.at(shared).ensure()
        assert stat.S_IMODE(workspace.root.stat().st_mode) == 0o700
        assert stat.S_IMODE(workspace.prefect_home.stat().st_mode) == 0o700
        private_files()
        (workspace.root / "mlflow.db").write_text("")
        assert stat.S_IMODE((workspace.root / "mlflow.db").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_a_model_file_never_holds_the_password() -> None:
    from components.core.modelfile import propose_model, render_model_file
    from components.core.secrets import without_password

    assert (
        without_password("postgresql://ml:pw@db:5432/x?sslmode=require") == "postgresql://ml@db:5432/x?sslmode=require"
    )
    frame = pd.DataFrame({"x": range(40), "y": [0, 1] * 20})
    proposal = propose_model(frame, "loans", f"postgresql://ml:{SECRET}@db/x", "y")
    text = render_model_file(proposal, "roc_auc", "expectations/loans.json")
    assert SECRET not in text and "postgresql://ml@db/x" in text and PASSWORD_VARIABLE in text
