"""`mlops approve`, `mlops reject` and `mlops history`: people in the release, and its record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli.common import ConfigOption, ModelOption, _fail, _model, _reachable_store, _workspace, err, out

VersionOption = Annotated[str, typer.Option("--version", "-v", help="The model version (e.g. 7).")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why: recorded on the version and in the history.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _context(config_path: Any, name: str | None, what: str) -> tuple[str, Any, Any, Any]:
    """(model name, workspace, registry client, alerter) for a command on one model."""
    from components.core.alerts import Alerter
    from components.tracking import registry

    model_name, config = _model(config_path, name, what)
    workspace = _workspace(config)
    _reachable_store(workspace)
    return model_name, workspace, registry.connect(workspace), Alerter(config.alerts, model_name, workspace.alerts)


def _reason(reason: str) -> str:
    if not reason.strip():
        _fail("--reason must say why (it is recorded on the version and in the history)")
    return reason.strip()


def approve(
    version: VersionOption, reason: ReasonOption, config_path: ConfigOption = None, name: ModelOption = None
) -> None:
    """Make a version waiting for approval champion (`promotion.approval: manual`).

    Refused when the champion moved since the version was judged: its evidence compared it with
    another model (retrain to compare against the current one).
    """
    from components.tracking import decisions, registry
    from components.tracking.registry.history import actor

    model_name, workspace, client, alerter = _context(config_path, name, "`mlops approve`")
    version, by = version.lstrip("v"), actor()
    try:
        outgoing = decisions.approve(client, model_name, version, _reason(reason), by=by, lock_dir=workspace.root)
    except registry.RegistryError as exc:
        _fail(str(exc))
    alerter.send("approved", f"v{version} approved by {by} and promoted: {reason}", version=version, by=by)
    alerter.send("promoted", f"v{version} is champion (approved by {by})", version=version, previous=outgoing)
    was = f" (v{outgoing} is now previous-champion)" if outgoing else ""
    err.print(f"{model_name}: v{version} approved by {by} and promoted to champion{was}", highlight=False)


def reject(
    version: VersionOption, reason: ReasonOption, config_path: ConfigOption = None, name: ModelOption = None
) -> None:
    """End a version's wait for approval; the champion stays."""
    from components.tracking import decisions, registry
    from components.tracking.registry.history import actor

    model_name, workspace, client, alerter = _context(config_path, name, "`mlops reject`")
    version, by = version.lstrip("v"), actor()
    try:
        decisions.reject(client, model_name, version, _reason(reason), by=by, lock_dir=workspace.root)
    except registry.RegistryError as exc:
        _fail(str(exc))
    alerter.send("rejected", f"v{version} rejected by {by}: {reason}", version=version, by=by)
    err.print(f"{model_name}: v{version} rejected by {by}; the champion stays", highlight=False)


def _parse_time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--at {text!r} is not an ISO time (e.g. 2026-12-01 or 2026-12-01T14:30, UTC unless it says)")
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def history(
    config_path: ConfigOption = None,
    name: ModelOption = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Only: what was serving at this time (ISO, UTC unless it says).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Every move of the model's aliases: promotions, challengers started and retired, approvals,
    rejections, rollbacks and moves made outside the project (found and recorded now), with when,
    who, why and the evidence."""
    from components.tracking.audit import check_trail
    from components.tracking.registry import history as trail

    model_name, workspace, client, alerter = _context(config_path, name, "`mlops history`")
    check_trail(client, model_name, workspace, alerter)
    moves = trail.read(client, model_name)
    if at is not None:
        move = trail.serving_at(moves, _parse_time(at))
        answer = {"name": model_name, "at": _parse_time(at).isoformat(), "champion": move.champion if move else None}
        answer["since"] = move.at if move else None
        if as_json:
            print(json.dumps(answer))
            return
        serving = f"v{answer['champion']} (since {answer['since']})" if move and move.champion else "no champion"
        out.print(f"{model_name} at {answer['at']}: {serving}", highlight=False)
        return
    if as_json:
        print(json.dumps([m.as_dict() for m in moves]))
        return
    if not moves:
        out.print(f"{model_name}: no alias moves recorded yet")
        return
    out.print(_table(model_name, moves))


def _table(model_name: str, moves: list[Any]) -> Table:
    table = Table(
        "when (UTC)",
        "what",
        "version",
        "champion after",
        "challenger after",
        "by",
        "why",
        title=f"{model_name}: history",
    )
    for move in moves:
        table.add_row(
            move.at[:19].replace("T", " "),
            move.action,
            f"v{move.version}" if move.version else "-",
            f"v{move.champion}" if move.champion else "-",
            f"v{move.challenger}" if move.challenger else "-",
            escape(move.by),
            escape(move.reason + (f" [{move.evidence}]" if move.evidence else "")),  # text, never markup
        )
    return table


def reproduce(
    version: VersionOption,
    config_path: ConfigOption = None,
    name: ModelOption = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Largest difference in a held-out metric that still matches.")
    ] = 1e-6,
    as_json: JsonOption = False,
) -> None:
    """Retrain a registered version from what its run recorded (the validated rows, the settings,
    the contract, the seed) in memory, and say whether its held-out metrics match within the
    tolerance; exit 4 when they do not. Nothing is registered."""
    from components.core.errors import UserError
    from components.pipeline.reproduce import reproduce as retrain
    from flows.cli.common import EXIT_RETRAIN

    model_name, workspace, client, _ = _context(config_path, name, "`mlops reproduce`")
    version = version.lstrip("v")
    err.print(f"retraining {model_name} v{version} from its recorded inputs ...", highlight=False)
    try:
        done = retrain(client, model_name, version, workspace.root, tolerance)
    except UserError as exc:
        _fail(str(exc), exc.exit_status)
    if as_json:
        print(json.dumps(done.as_dict()))
    else:
        out.print(_reproduction_table(done))
        code = {True: "the same commit", False: f"another commit than the recorded {done.recorded_commit}"}
        out.print(f"code: {code[done.same_code] if done.same_code is not None else 'commit unknown'}", highlight=False)
    if not done.matches:
        raise typer.Exit(EXIT_RETRAIN)


def _reproduction_table(done: Any) -> Table:
    verdict = "matches" if done.matches else "does NOT match"
    table = Table(
        "metric",
        "recorded",
        "reproduced",
        "difference",
        title=f"{done.name} v{done.version} from {done.rows:,} recorded rows: {verdict} (tolerance {done.tolerance:g})",
    )
    for check in done.metrics:
        reproduced = "-" if check.reproduced is None else f"{check.reproduced:.6f}"
        difference = "-" if check.difference is None else f"{check.difference:.2e}"
        table.add_row(check.name, f"{check.recorded:.6f}", reproduced, difference)
    return table
