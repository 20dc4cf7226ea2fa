"""The workspace's local Prefect server: private (a key from a 0600 file), visible with its memory,
stoppable in one command, gone by itself when idle; deployments accept only their own config."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import pytest

from components.core.config import DataConfig, PipelineConfig
from flows import prefect_server as ps


@pytest.fixture
def server_home(tmp_path: Path):
    home = tmp_path / "ws" / "prefect"
    yield home
    ps.stop_server(home, timeout=10)


def test_local_server_requires_its_key_and_is_listed_with_its_memory(server_home: Path) -> None:
    info = ps.ensure_server(server_home, port=4311, idle_minutes=None)
    key = ps.auth_string(server_home)
    assert stat.S_IMODE(ps.auth_file(server_home).stat().st_mode) == 0o600
    assert key.startswith("mlops:") and len(key) > 40
    # another local user without the key gets nothing; a guessed key neither
    assert ps.authorized(info.api_url, None) == 401
    assert ps.authorized(info.api_url, "mlops:guess") == 401
    assert ps.authorized(info.api_url, key) == 200
    assert ps.ensure_server(server_home) == info  # reused, not multiplied
    listed = [s for s in ps.list_servers() if s.pid == info.pid]
    assert listed and listed[0].home == server_home and listed[0].port == info.port
    assert listed[0].rss_bytes and listed[0].rss_bytes > 50 * 2**20
    stopped = ps.stop_server(server_home, timeout=10)
    assert stopped == info and not ps.pid_alive(info.pid)
    assert ps.read_server(server_home) is None


def test_idle_server_exits_by_itself(server_home: Path) -> None:
    info = ps.ensure_server(server_home, port=4312, idle_minutes=0.05)  # 3 s
    deadline = time.monotonic() + 60
    while ps.pid_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(1)
    assert not ps.pid_alive(info.pid)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    ps.auth_string(home)
    ps.auth_file(home).chmod(0o644)
    with pytest.raises(ps.PrefectServerError, match="chmod 600"):
        ps.auth_string(home)


def test_idle_watch_counts_open_connections() -> None:
    release = asyncio.Event()

    async def app(scope, receive, send) -> None:
        await release.wait()

    watch = ps.IdleExit(app, idle_seconds=0.0)
    assert watch.idle() is False  # not before the app has started
    watch.started = True

    async def scenario() -> tuple[bool, bool]:
        request = asyncio.ensure_future(watch({"type": "websocket"}, None, None))
        await asyncio.sleep(0.01)
        busy = watch.idle()
        release.set()
        await request
        await asyncio.sleep(0.01)
        return busy, watch.idle()

    busy, after = asyncio.run(scenario())
    assert busy is False and after is True


def test_deployment_runs_accept_only_the_served_config(tmp_path: Path) -> None:
    from flows.deploy import SERVED_CONFIGS, DeployError, check_job_config

    own = tmp_path / "mlops.yaml"
    own.write_text("home: .mlops\n")
    other = tmp_path / "elsewhere.yaml"
    other.write_text("home: /tmp/x\n")
    served = {SERVED_CONFIGS: json.dumps([str(own.resolve())])}
    assert check_job_config(str(own), served) == own
    with pytest.raises(DeployError, match="refusing config file"):
        check_job_config(str(other), served)
    assert check_job_config(str(other), {}) == other  # not started by `mlops deploy`: nothing to compare


def test_flow_run_parameters_hold_no_password(prefect_api) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow
    def takes_config(config: PipelineConfig) -> str:
        from prefect.runtime import flow_run

        return str(flow_run.id)

    secret = "pw-9f8e7d"
    run_id = takes_config(PipelineConfig(data=DataConfig(source=f"postgresql://ml:{secret}@db/x", query="select 1")))

    async def parameters() -> dict:
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).parameters

    stored = json.dumps(asyncio.run(parameters()))
    assert secret not in stored and "ml:***@db" in stored
