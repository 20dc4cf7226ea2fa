"""`mlops reproduce`'s refusals and verdicts, on a real SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.core.workspace import Workspace
from components.pipeline.reproduce import MetricCheck, NotReproducible, Reproduction, reproduce
from components.tracking import registry


def test_a_version_whose_run_recorded_no_inputs_is_refused(tmp_path: Path) -> None:
    workspace = Workspace.at(tmp_path / "ws").ensure()
    client = registry.connect(workspace)
    experiment = registry.ensure_experiment(client, "loans", workspace)
    run_id = registry.start_run(client, experiment, {}, {})
    client.create_registered_model("loans")
    client.create_model_version("loans", source=str(tmp_path / "model"), run_id=run_id)
    with pytest.raises(NotReproducible, match="did not record its training rows"):
        reproduce(client, "loans", "1", workspace.root)


@pytest.mark.parametrize(
    ("reproduced", "matches"),
    [((0.81, 0.3), True), ((0.8100001, 0.3), True), ((0.811, 0.3), False), ((0.81, None), False)],
)
def test_every_metric_must_match_within_the_tolerance(reproduced, matches) -> None:
    checks = [MetricCheck("test_roc_auc", 0.81, reproduced[0]), MetricCheck("test_log_loss", 0.3, reproduced[1])]
    done = Reproduction("loans", "1", "r", 1e-6, 100, checks, "abc", "abd")
    assert done.matches is matches and done.same_code is False
    assert Reproduction("loans", "1", "r", 1e-6, 100, []).matches is False  # nothing compared proves nothing
