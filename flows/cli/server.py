"""`mlops server start/stop/status`: the workspace's local Prefect server."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from components.core.secrets import redact
from components.core.workspace import Workspace
from flows.cli.common import (
    ConfigOption,
    _fail,
    _load,
    _workspace,
    out,
)


def server_start(config_path: ConfigOption = None) -> None:
    """Start the workspace's Prefect server (UI included) if it is not running."""
    from flows.prefect_server import PrefectServerError, auth_file, ensure_server

    config = _load(config_path)
    workspace = _workspace(config)
    try:
        info = ensure_server(workspace.prefect_home, idle_minutes=config.prefect.idle_minutes)
    except PrefectServerError as exc:
        _fail(str(exc))
    out.print(f"Prefect server running (pid {info.pid}): UI {info.ui_url}, API {info.api_url}", highlight=False)
    out.print(f"the UI asks for the key in {auth_file(workspace.prefect_home)}", highlight=False)


AllServersOption = Annotated[
    bool, typer.Option("--all", help="Every local Prefect server of this user, in any workspace.")
]


def server_stop(config_path: ConfigOption = None, every: AllServersOption = False) -> None:
    """Stop the workspace's local Prefect server (with --all: every one this user runs)."""
    from flows.prefect_server import stop_all, stop_server

    if every:
        stopped = stop_all()
        for server in stopped:
            out.print(f"stopped the Prefect server of {server.home.parent} (pid {server.pid})", highlight=False)
        if not stopped:
            out.print("no local Prefect server was running")
        return
    workspace = Workspace.at(_load(config_path).home)
    info = stop_server(workspace.prefect_home)
    out.print(f"stopped the Prefect server (pid {info.pid})" if info else "no Prefect server was running")


def _describe_server(server: Any) -> str:
    memory = f"{server.rss_bytes / 2**20:,.0f} MiB" if server.rss_bytes is not None else "memory unknown"
    since = datetime.fromtimestamp(server.started, UTC).isoformat(timespec="seconds") if server.started else "unknown"
    port = f"UI http://127.0.0.1:{server.port}" if server.port else "port unknown"
    return f"Prefect server of {server.home.parent} (pid {server.pid}, {memory}, since {since}): {port}"


def background_lines(home: Path | None) -> list[str]:
    """What this project keeps running: the local Prefect server of `home`'s workspace (every one
    of this user's when `home` is None), each with its memory."""
    from flows.prefect_server import list_servers

    servers = list_servers()
    if home is not None:
        own = Workspace.at(home).prefect_home.resolve()
        servers = [s for s in servers if s.home.resolve() == own]
    return [_describe_server(s) for s in servers]


def server_status(config_path: ConfigOption = None, every: AllServersOption = False) -> None:
    """Show the workspace's local Prefect server with its memory (with --all: every one of this user)."""
    config = _load(config_path)
    if os.environ.get("PREFECT_API_URL"):
        out.print(f"PREFECT_API_URL is set: flows report to {redact(os.environ['PREFECT_API_URL'])}")
    lines = background_lines(None if every else config.home)
    for line in lines:
        out.print(line, highlight=False)
    if not lines:
        out.print("no local Prefect server is running" + ("" if every else " for this workspace"))
    elif config.prefect.idle_minutes:
        out.print(f"each exits after {config.prefect.idle_minutes:g} minutes without a request", highlight=False)
