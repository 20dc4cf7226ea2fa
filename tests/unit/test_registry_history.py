"""The audit trail on a real SQLite registry: every alias move, outside moves, approvals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from components.core.workspace import Workspace
from components.modeling.promotion import Decision
from components.tracking import decisions, registry
from components.tracking.registry import history


@pytest.fixture
def client(tmp_path: Path):
    client = registry.connect(Workspace.at(tmp_path / "ws").ensure())
    client.create_registered_model("loans")
    for _ in range(3):
        client.create_model_version("loans", source=str(tmp_path / "model"))
    return client


def _promote(client, version: str, expected, lock_dir: Path) -> None:
    audit = registry.Audit(f"v{version} beats the champion", "mlops run", f"runs:/r{version}/decision.json", "ci")
    registry.set_champion(client, "loans", version, {}, expected=expected, lock_dir=lock_dir, audit=audit)


def test_promotions_and_a_rollback_are_recorded_in_order(client, tmp_path: Path) -> None:
    _promote(client, "1", None, tmp_path)
    _promote(client, "2", "1", tmp_path)
    registry.rollback(client, "loans", "v2 is bad", expected="2", lock_dir=tmp_path)
    moves = history.read(client, "loans")
    assert [(m.action, m.version, m.champion, m.previous_champion) for m in moves] == [
        ("promoted", "1", "1", None),
        ("promoted", "2", "2", "1"),
        ("rollback", "1", "1", "2"),
    ]
    assert moves[0].by == "ci" and moves[0].evidence == "runs:/r1/decision.json"
    assert moves[2].reason == "v2 is bad" and moves[2].via == "mlops rollback"


def test_what_was_serving_at_a_time(client, tmp_path: Path) -> None:
    before = datetime.now(UTC)
    _promote(client, "1", None, tmp_path)
    between = datetime.now(UTC)
    _promote(client, "2", "1", tmp_path)
    moves = history.read(client, "loans")
    assert history.serving_at(moves, before) is None
    assert history.serving_at(moves, between).champion == "1"
    assert history.serving_at(moves, datetime.now(UTC)).champion == "2"


def test_a_champion_moved_by_hand_is_found_and_recorded_once(client, tmp_path: Path) -> None:
    _promote(client, "1", None, tmp_path)
    client.set_registered_model_alias("loans", "champion", "3")  # as in the MLflow UI
    move = registry.check_trail(client, "loans", tmp_path)
    assert move.action == "outside_move" and move.champion == "3" and move.by == history.OUTSIDE
    assert "left it at v1" in move.reason
    assert registry.check_trail(client, "loans", tmp_path) is None  # recorded: not found again
    _promote(client, "2", "3", tmp_path)
    assert [m.action for m in history.read(client, "loans")] == ["promoted", "outside_move", "promoted"]


def test_a_champion_older_than_the_trail_is_first_seen_not_an_outside_move(client, tmp_path: Path) -> None:
    client.set_registered_model_alias("loans", "champion", "1")
    move = registry.check_trail(client, "loans", tmp_path)
    assert move.action == "first_seen" and move.champion == "1"


def test_no_trail_for_a_model_not_registered_yet(client) -> None:
    assert history.read(client, "unknown") == []
    assert registry.check_trail(client, "unknown") is None


def _passing(reason: str = "roc_auc 0.80 beats 0.75") -> Decision:
    return Decision(True, reason, "roc_auc", 0.8, 0.75)


def test_manual_approval_stops_at_ready_then_approve_promotes(client, tmp_path: Path) -> None:
    _promote(client, "1", None, tmp_path)
    applied = decisions.apply_decision(
        client, "loans", "2", _passing(), run_id="r2", expected_champion="1", lock_dir=tmp_path, approval="manual"
    )
    assert applied.pending and registry.get_champion(client, "loans").version == "1"
    assert client.get_model_version("loans", "2").tags["approval"] == "pending"
    outgoing = decisions.approve(client, "loans", "2", "checked the slices", by="ana", lock_dir=tmp_path)
    assert outgoing == "1" and registry.get_champion(client, "loans").version == "2"
    tags = client.get_model_version("loans", "2").tags
    assert tags["approval"] == "approved" and tags["approved_by"] == "ana"
    moves = history.read(client, "loans")
    assert [(m.action, m.by) for m in moves[1:]] == [("ready", history.actor()), ("approved", "ana")]
    assert moves[2].reason == "checked the slices"
    with pytest.raises(decisions.NotPending, match="its approval is 'approved'"):
        decisions.approve(client, "loans", "2", "again", by="ana", lock_dir=tmp_path)


def test_an_approval_is_refused_when_the_champion_moved_since(client, tmp_path: Path) -> None:
    _promote(client, "1", None, tmp_path)
    decisions.apply_decision(
        client, "loans", "2", _passing(), run_id="r2", expected_champion="1", lock_dir=tmp_path, approval="manual"
    )
    _promote(client, "3", "1", tmp_path)
    with pytest.raises(registry.ChampionMoved, match="champion is now v3"):
        decisions.approve(client, "loans", "2", "ok", by="ana", lock_dir=tmp_path)
    assert client.get_model_version("loans", "2").tags["approval"] == "stale"
    assert registry.get_champion(client, "loans").version == "3"


def test_reject_ends_the_wait_and_keeps_the_champion(client, tmp_path: Path) -> None:
    _promote(client, "1", None, tmp_path)
    decisions.apply_decision(
        client, "loans", "2", _passing(), run_id="r2", expected_champion="1", lock_dir=tmp_path, approval="manual"
    )
    decisions.reject(client, "loans", "2", "fails the fairness review", by="bo", lock_dir=tmp_path)
    assert client.get_model_version("loans", "2").tags["approval"] == "rejected"
    assert registry.get_champion(client, "loans").version == "1"
    last = history.read(client, "loans")[-1]
    assert (last.action, last.version, last.champion, last.by) == ("rejected", "2", "1", "bo")
    with pytest.raises(decisions.NotPending, match="not waiting for approval"):
        decisions.reject(client, "loans", "3", "never held", by="bo", lock_dir=tmp_path)
