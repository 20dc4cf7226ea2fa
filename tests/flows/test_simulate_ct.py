"""The continuous-training loop end to end, as `mlops simulate-ct` runs it with its defaults: a
corrupted batch refused, covariate and concept shifts detected and retrained on, no retraining on
stable batches, for a classification and a regression stream, and with challengers in shadow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app


@pytest.mark.parametrize(
    ("task", "rollout"), [("classification", "direct"), ("regression", "direct"), ("classification", "shadow")]
)
def test_the_loop_meets_every_goal(
    task: str, rollout: str, prefect_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "ws"))
    args = ["simulate-ct", "--task", task, "--rollout", rollout, "--home", str(tmp_path / "sim"), "--json"]
    result = CliRunner().invoke(app, args)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    missed = [f"{g['name']}: {g['detail']}" for g in data["goals"] if not g["met"]]
    assert result.exit_code == 0 and not missed, missed
    validation = {row["batch"]: row["validation"] for row in data["timeline"]}
    assert validation[6] == "rejected" and list(validation.values()).count("rejected") == 1  # only the corrupt one
    promoted = [row["batch"] for row in data["timeline"] if row["promoted"]]
    assert len(promoted) == 2 and 4 <= promoted[0] < 8 <= promoted[1]  # one retraining per shift
    if rollout == "shadow":  # each promotion came from a challenger's online test, at most two batches on
        started = [row["batch"] for row in data["timeline"] if row["started"]]
        assert len(started) == 2 and all(0 < p - s <= 2 for s, p in zip(started, promoted, strict=True))
        assert all(row["online"].startswith("promoted") for row in data["timeline"] if row["promoted"])
        budgets = [row["label_budget"] for row in data["timeline"] if row["started"]]  # measured, not judged
        assert all("queue" in b and "random" in b and "shadow rows" in b for b in budgets), budgets
        estimates = [row["without_labels"] for row in data["timeline"] if row["started"]]  # measured too
        assert all((" after " in e and "requests" in e) or "would not decide" in e for e in estimates), estimates
    if task == "regression":  # its RMSE estimated without labels (direct loss estimation) is judged too
        assert any("estimated without labels" in g["name"] for g in data["goals"])
