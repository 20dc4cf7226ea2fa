"""A service reachable from the network answers only with a key, unless told otherwise out loud;
a Bento never carries a password."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.core.config import ServingConfig
from serving.build import BuildError, check_no_credentials
from serving.service import ExposedWithoutKey, ServiceSettings, check_exposure


def _settings(bundle_tag: str | None, api_key: str | None) -> ServiceSettings:
    return ServiceSettings("loans", (), None, "binary", ServingConfig(), None, api_key, None, bundle_tag)


def test_a_bundled_service_needs_a_key_or_an_explicit_yes() -> None:
    with pytest.raises(ExposedWithoutKey, match="MLOPS_API_KEY"):
        check_exposure(_settings("loans-model:abc", None), {})
    check_exposure(_settings("loans-model:abc", "k3y"), {})
    check_exposure(_settings("loans-model:abc", None), {"MLOPS_ALLOW_UNAUTHENTICATED": "true"})
    check_exposure(_settings(None, None), {})  # `mlops serve` checks its bind address itself


def test_mlops_serve_refuses_a_public_address_without_a_key(tmp_path: Path, monkeypatch) -> None:
    from flows.cli import app
    from tests.conftest import write_config

    config = write_config(tmp_path / "mlops.yaml", tmp_path / "ws", tmp_path / "data", tmp_path / "suites")
    monkeypatch.delenv("MLOPS_API_KEY", raising=False)
    refused = CliRunner().invoke(app, ["serve", "--config", str(config), "--host", "0.0.0.0"])
    assert refused.exit_code == 1 and "refusing to serve on 0.0.0.0 without MLOPS_API_KEY" in refused.output
    # loopback passes the check (and stops later: this workspace has no champion)
    local = CliRunner().invoke(app, ["serve", "--config", str(config), "--host", "::1"])
    assert "refusing to serve" not in local.output and "no champion" in local.output


def test_a_bento_never_packs_a_password(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "mlops.yaml").write_text("home: .mlops\n")
    (tmp_path / "models" / "loans.yaml").write_text("data:\n  source: data/loans.csv\n")
    check_no_credentials(tmp_path, ["mlops.yaml", "models/*.yaml"])
    (tmp_path / "models" / "db.yaml").write_text("data:\n  source: postgresql://ml:s3cret@db/loans\n")
    with pytest.raises(BuildError, match=r"models/db\.yaml holds a password"):
        check_no_credentials(tmp_path, ["mlops.yaml", "models/*.yaml"])
