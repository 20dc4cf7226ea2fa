"""The audit trail checked where the project looks at a model, and its surprises alerted."""

from __future__ import annotations

import logging
from typing import Any

from components.core.alerts import Alerter
from components.core.workspace import Workspace
from components.tracking import registry
from components.tracking.registry.history import Move

LOG = logging.getLogger("mlops.audit")


def check_trail(client: Any, name: str, workspace: Workspace, alerter: Alerter) -> Move | None:
    """Reconcile the model's trail with its aliases; a move made outside the project is logged and
    alerted. Returns the move recorded, if any."""
    move = registry.check_trail(client, name, workspace.root)
    if move is not None and move.action == "outside_move":
        LOG.warning("%s: %s", name, move.reason)
        alerter.send("outside_move", move.reason, champion=move.champion, previous_champion=move.previous_champion)
    return move
