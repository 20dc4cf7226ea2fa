"""The scoring flow and `mlops score` on a trained workspace: a real Prefect API and SQLite registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster
from typer.testing import CliRunner

from components.core.workspace import Workspace
from components.inference.scoring import predict_frame
from components.simulation.simulate import write_batches
from components.tracking import registry
from flows.cli import EXIT_REJECTED, app
from flows.scoring import scoring_flow

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Dask scheduler with two single-threaded worker processes that work in a folder of their own,
    as on another machine: they see absolute paths as this process does, relative ones elsewhere."""
    elsewhere = tmp_path_factory.mktemp("worker-folder")
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},  # its HTTP routes on a free port, not 8787
        preload=[f"import os; os.chdir({str(elsewhere)!r})"],
    ) as cluster:
        yield cluster.scheduler_address


def _champion(config) -> registry.ChampionInfo:
    champion = registry.get_champion(registry.connect(Workspace.at(config.home)), "loans")
    assert champion is not None
    return champion


def _new_rows(folder: Path, rows: int, seed: int = 99) -> pd.DataFrame:
    return pd.read_parquet(write_batches(folder, 1, rows, seed=seed)[0]).drop(columns=["default"])


def _score(config_path: Path, *args: str):
    return CliRunner().invoke(app, ["score", "--config", str(config_path), *args])


def test_scoring_flow_scores_with_the_champion(trained, tmp_path: Path) -> None:
    _, config, _ = trained
    frame = _new_rows(tmp_path / "new", 300)
    source = tmp_path / "new.parquet"
    frame.to_parquet(source, index=False)
    result = scoring_flow(config, source, tmp_path / "out" / "scores.parquet")
    champion = _champion(config)
    assert (result.model_name, result.model_version) == ("loans", champion.version)
    assert (result.rows, result.scored, result.rejected, result.workers) == (300, 300, 0, 1)
    scored = pd.read_parquet(result.output)
    expected = predict_frame(registry.load_model(champion.uri), frame)
    assert scored["loan_id"].tolist() == frame["loan_id"].tolist()
    assert scored["prediction"].tolist() == expected.labels
    np.testing.assert_allclose(scored["probability"], expected.probabilities)
    assert (scored["model_version"] == champion.version).all()
    cached = Workspace.at(config.home).model_cache("loans", champion.version)
    assert (cached / "MLmodel").is_file()  # downloaded once; workers load this copy
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["scores.parquet"]


def test_cli_reject_mode_scores_the_valid_rows_and_reports_the_rest(trained, tmp_path: Path) -> None:
    config_path, config, _ = trained
    frame = _new_rows(tmp_path / "new", 200).astype({"credit_score": str})
    frame.loc[7, "credit_score"] = "excellent"
    frame.loc[150, "region"] = "atlantis"
    source = tmp_path / "new.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "scores.parquet"
    result = _score(config_path, "-i", str(source), "-o", str(out), "--on-invalid", "reject", "--progress", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert (outcome["rows"], outcome["scored"], outcome["rejected"]) == (200, 198, 2)
    assert outcome["model_version"] == _champion(config).version
    rejects = pd.read_parquet(tmp_path / "scores.rejects.parquet")
    assert outcome["rejects"] == str(tmp_path / "scores.rejects.parquet")
    assert rejects["input_row"].tolist() == [7, 150]
    assert rejects["reject_reason"].tolist()[0] == "credit_score: not a number, got 'excellent'"
    assert "region: expect_column_values_to_be_in_set" in rejects["reject_reason"].tolist()[1]
    assert len(pd.read_parquet(out)) == 198
    assert "rejected 2 rows" in result.output and "rows/s" in result.output


def test_cli_fails_on_a_bad_row_by_default_and_writes_nothing(trained, tmp_path: Path) -> None:
    config_path, _, _ = trained
    frame = _new_rows(tmp_path / "new", 200)
    frame.loc[7, "loan_amount"] = -1.0
    source = tmp_path / "new.parquet"
    frame.to_parquet(source, index=False)
    result = _score(config_path, "-i", str(source), "-o", str(tmp_path / "scores.parquet"))
    assert result.exit_code == EXIT_REJECTED, result.output
    assert "error: rejected:" in result.output and "row 7: loan_amount" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "new.parquet"]


def test_cli_refuses_a_file_without_the_model_columns_before_writing(trained, tmp_path: Path) -> None:
    config_path, _, _ = trained
    source = tmp_path / "new.parquet"
    _new_rows(tmp_path / "new", 50).drop(columns=["credit_score"]).to_parquet(source, index=False)
    result = _score(config_path, "-i", str(source), "-o", str(tmp_path / "out" / "scores.parquet"))
    assert result.exit_code == EXIT_REJECTED, result.output
    assert "lacks column(s) the model needs: credit_score" in result.output
    assert not (tmp_path / "out").exists()
    missing = _score(config_path, "-i", str(tmp_path / "absent.csv"), "-o", str(tmp_path / "s.parquet"))
    assert missing.exit_code == 1 and "input file not found" in missing.output
    clash = _score(
        config_path,
        "-i",
        str(source),
        "-o",
        str(tmp_path / "s.parquet"),
        "--on-invalid",
        "fail",
        "--rejects",
        "r.parquet",
    )
    assert clash.exit_code == 1 and "--rejects" in clash.output


@pytest.mark.slow
def test_dask_with_two_workers_gives_the_same_output_as_one_process(trained, scheduler: str, tmp_path: Path) -> None:
    _, config, _ = trained
    frame = _new_rows(tmp_path / "new", 4000, seed=5)
    frame.loc[[10, 2500, 3999], "region"] = "atlantis"
    source = tmp_path / "new.csv"  # CSV partitions: byte ranges whose row numbers are only known at the end
    frame.to_csv(source, index=False)
    where = {"here": {"workers": 1}, "local": {"workers": 2}, "scheduler": {"dask_address": scheduler}}
    runs = {
        name: scoring_flow(
            config.with_overrides(scoring={**place, "chunk_rows": 300, "on_invalid": "reject"}),
            source,
            tmp_path / f"{name}.parquet",
        )
        for name, place in where.items()
    }
    one, two, remote = runs["here"], runs["local"], runs["scheduler"]
    assert two.workers == remote.workers == 2 and two.partitions == remote.partitions == 2 and one.partitions == 1
    for other in (two, remote):
        assert (other.rows, other.scored, other.rejected) == (one.rows, one.scored, one.rejected) == (4000, 3997, 3)
        a, b = (pd.read_parquet(r.output).drop(columns="scored_at") for r in (one, other))
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
        ra, rb = (pd.read_parquet(r.rejects) for r in (one, other))
        pd.testing.assert_frame_equal(ra, rb)
        assert rb["input_row"].tolist() == [10, 2500, 3999]


def test_cli_refuses_a_scheduler_whose_workers_cannot_see_the_input(
    trained, scheduler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path, _, _ = trained
    monkeypatch.chdir(tmp_path)
    _new_rows(tmp_path / "new", 50).to_parquet("new.parquet", index=False)  # relative: elsewhere on the workers
    out = tmp_path / "out" / "scores.parquet"
    result = _score(config_path, "-i", "new.parquet", "-o", str(out), "--dask-address", scheduler)
    assert result.exit_code == 1, result.output
    assert f"error: the Dask workers of {scheduler} cannot take this job" in result.output
    assert "cannot read new.parquet: not found, relative to the worker's folder" in result.output
    assert "MLOPS_HOME" in result.output and "Traceback" not in result.output
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing scored, the scratch folder gone
