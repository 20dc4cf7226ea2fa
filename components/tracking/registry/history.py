"""The audit trail of a registered model: every alias move, kept with the registry.

Each move is one registered-model tag, `audit.<UTC time>.<random>` holding a JSON record (when,
what, which versions, who, why, the evidence), so the trail lives wherever the registry does
(SQLite, PostgreSQL behind an MLflow server), survives the workspace and shows in the MLflow UI.
Every record also says where `champion` and `previous-champion` point after it, so "what was
serving at time T" is the last record at or before T.

A move made outside the project (by hand in the MLflow UI, by another tool) leaves no record:
`reconcile` finds the champion where the last record did not leave it and records an
`outside_move`, which callers alert on.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

PREFIX = "audit."
ACTOR_VARIABLE = "MLOPS_ACTOR"
OUTSIDE = "outside the project"
REASON_CHARS = 2000


def actor() -> str:
    """Who is acting: `MLOPS_ACTOR` (set it in CI and workers), else user@host."""
    named = os.environ.get(ACTOR_VARIABLE, "").strip()
    if named:
        return named
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Move:
    """One entry of the trail."""

    action: str  # promoted | ready | approved | rejected | rollback | outside_move | first_seen
    #              | challenger_started | challenger_retired (a challenger promoted is `promoted`)
    version: str | None  # the version acted on
    champion: str | None  # where `champion` points after this
    previous_champion: str | None
    by: str
    reason: str
    via: str = ""  # the command or flow that acted
    evidence: str | None = None  # runs:/<run id>, or another link to what the decision rested on
    at: str = ""
    challenger: str | None = None  # where `challenger` points after this

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _key(at: str) -> str:
    stamp = at.replace("-", "").replace(":", "").replace("+0000", "Z")
    return f"{PREFIX}{stamp}.{uuid.uuid4().hex[:6]}"


def record(client: MlflowClient, name: str, move: Move) -> Move:
    """Append one move to the model's trail (stamped now when it has no time)."""
    move = replace(move, at=move.at or _now(), reason=move.reason[:REASON_CHARS])
    client.set_registered_model_tag(name, _key(move.at), json.dumps(move.as_dict()))
    return move


def read(client: MlflowClient, name: str) -> list[Move]:
    """The model's trail, oldest first (empty for a model not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags or {}
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return []
        raise
    moves = []
    for key in sorted(k for k in tags if k.startswith(PREFIX)):
        try:
            fields = json.loads(tags[key])
            moves.append(Move(**{k: fields.get(k) for k in Move.__dataclass_fields__}))
        except (ValueError, TypeError):
            continue  # a tag someone wrote by hand under our prefix: not ours to interpret
    return sorted(moves, key=lambda m: m.at)


def serving_at(moves: list[Move], at: datetime) -> Move | None:
    """The last move at or before `at` (its `champion` is what was serving), or None."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    last = None
    for move in moves:
        if datetime.fromisoformat(move.at) <= at:
            last = move
    return last


def reconcile(
    client: MlflowClient,
    name: str,
    champion: str | None,
    previous: str | None,
    moves: list[Move] | None = None,
    challenger: str | None = None,
) -> Move | None:
    """Record where the aliases are when the trail does not explain it; returns the move recorded.

    With no trail yet, a champion found is recorded as `first_seen` (it predates the trail). When
    the last move left `champion` elsewhere, the move was made outside the project, or by a
    process that died between moving the alias and recording it: an `outside_move`.
    """
    moves = read(client, name) if moves is None else moves
    if not moves:
        if champion is None:
            return None
        note = f"v{champion} was champion before this trail began"
        first = Move("first_seen", champion, champion, previous, actor(), note, "reconcile", challenger=challenger)
        return record(client, name, first)
    last = moves[-1]
    if last.champion == champion:
        return None
    reason = (
        f"champion is {'absent' if champion is None else f'v{champion}'}, but the last recorded move "
        f"({last.action} at {last.at}) left it at v{last.champion}: moved by hand (e.g. in the MLflow UI), "
        "by another tool, or by a process that died before recording its move"
    )
    moved = Move("outside_move", champion, champion, previous, OUTSIDE, reason, "reconcile", challenger=challenger)
    return record(client, name, moved)
