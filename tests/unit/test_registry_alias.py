"""Promotions that race for the `champion` alias, on a real SQLite registry."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from components.core.workspace import Workspace
from components.tracking import registry


@pytest.fixture
def client(tmp_path: Path):
    client = registry.connect(Workspace.at(tmp_path / "ws").ensure())
    client.create_registered_model("loans")
    for _ in range(3):
        client.create_model_version("loans", source=str(tmp_path / "model"))
    return client


def test_two_runs_racing_for_the_first_promotion_leave_one_champion(client, tmp_path: Path) -> None:
    outcomes: dict[str, object] = {}

    def promote(version: str) -> None:
        try:
            outcomes[version] = registry.set_champion(client, "loans", version, {}, expected=None, lock_dir=tmp_path)
        except registry.ChampionMoved as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("1", "2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [v for v, outcome in outcomes.items() if not isinstance(outcome, Exception)]
    assert len(winners) == 1
    loser = next(v for v in outcomes if v not in winners)
    assert "not promoted" in str(outcomes[loser])
    assert registry.get_champion(client, "loans").version == winners[0]
    assert registry._alias_version(client, "loans", registry.PREVIOUS_CHAMPION) is None


def test_a_candidate_compared_with_an_old_champion_is_not_promoted(client, tmp_path: Path) -> None:
    registry.set_champion(client, "loans", "1", {}, expected=None, lock_dir=tmp_path)
    registry.set_champion(client, "loans", "2", {}, expected="1", lock_dir=tmp_path)  # another run won
    with pytest.raises(registry.ChampionMoved, match="champion is now v2, not v1"):
        registry.set_champion(client, "loans", "3", {"promoted_at": "x"}, expected="1", lock_dir=tmp_path)
    champion = registry.get_champion(client, "loans")
    assert champion.version == "2" and "promoted_at" not in client.get_model_version("loans", "3").tags
    assert registry._alias_version(client, "loans", registry.PREVIOUS_CHAMPION) == "1"


def test_a_rollback_racing_a_promotion_never_discards_the_new_champion_unseen(client, tmp_path: Path) -> None:
    import threading

    registry.set_champion(client, "loans", "1", {}, expected=None, lock_dir=tmp_path)
    registry.set_champion(client, "loans", "2", {}, expected="1", lock_dir=tmp_path)
    # A promotion of v3 holds the lock; the operator's rollback of v2 waits for it, then sees v3.
    outcome: dict[str, object] = {}
    with registry.alias_lock(tmp_path):

        def roll_back() -> None:
            try:
                outcome["done"] = registry.rollback(client, "loans", "v2 is bad", expected="2", lock_dir=tmp_path)
            except registry.ChampionMoved as exc:
                outcome["refused"] = exc

        thread = threading.Thread(target=roll_back)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waiting on the promotion's lock
        client.set_registered_model_alias("loans", "previous-champion", "2")
        client.set_registered_model_alias("loans", "champion", "3")
    thread.join(10)
    assert "champion is v3, not v2" in str(outcome["refused"])
    assert registry._alias_version(client, "loans", "champion") == "3"
    done = registry.rollback(client, "loans", "v3 is bad", expected="3", lock_dir=tmp_path)
    assert (done.restored, done.demoted) == ("2", "3")


def test_a_challenger_starts_is_promoted_or_retired_and_every_move_is_in_the_trail(client, tmp_path: Path) -> None:
    from components.tracking.registry import history

    registry.set_champion(client, "loans", "1", {}, expected=None, lock_dir=tmp_path)
    audit = registry.Audit("passed the gate", "mlops run")
    with pytest.raises(registry.ChampionMoved, match="not made challenger"):
        registry.set_challenger(client, "loans", "2", {}, expected_champion="3", audit=audit, lock_dir=tmp_path)
    tags = {"rollout": "canary", "canary_share": "0.2", "challenger_since": "2026-12-01T00:00:00+00:00"}
    assert registry.set_challenger(client, "loans", "2", tags, expected_champion="1", audit=audit) is None
    trial = registry.get_challenger(client, "loans")
    assert (trial.version, trial.rollout, trial.canary_share) == ("2", "canary", 0.2)
    assert trial.since == tags["challenger_since"]
    assert registry.set_challenger(client, "loans", "3", {}, expected_champion="1", audit=audit) == "2"
    assert client.get_model_version("loans", "2").tags["challenger.ended"] == "superseded by v3"
    assert registry.get_challenger(client, "loans").rollout == "shadow"  # untagged: shadow

    with pytest.raises(registry.ChallengerMoved, match="the challenger is v3, not v2"):
        registry.end_challenger(client, "loans", "2", registry.Audit("worse", "mlops monitor"))
    registry.end_challenger(client, "loans", "3", registry.Audit("worse", "mlops monitor"), tags={"online_test": "x"})
    assert registry.get_challenger(client, "loans") is None
    assert client.get_model_version("loans", "3").tags["challenger.ended"] == "retired"

    registry.set_challenger(client, "loans", "2", {}, expected_champion="1", audit=audit)
    better = registry.Audit("better online", "mlops monitor")
    registry.set_champion(client, "loans", "2", {}, expected="1", audit=better)
    assert registry.get_challenger(client, "loans") is None  # promoted: its trial is over
    moves = history.read(client, "loans")
    assert [(m.action, m.version, m.champion, m.challenger) for m in moves] == [
        ("promoted", "1", "1", None),
        ("challenger_started", "2", "1", "2"),
        ("challenger_started", "3", "1", "3"),
        ("challenger_retired", "3", "1", None),
        ("challenger_started", "2", "1", "2"),
        ("promoted", "2", "2", None),
    ]
