"""The warm runner: `mlops run` forked from a process that already imported everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from flows import runner
from tests.conftest import write_config


def test_key_ignores_shell_noise_but_not_settings() -> None:
    base = {"PATH": "/usr/bin", "PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    key = runner.runner_key(base)
    assert runner.runner_key({**base, "PWD": "/elsewhere", "SHLVL": "3", "COLUMNS": "80"}) == key
    assert runner.runner_key({**base, "PREFECT_API_URL": "http://other:4200/api"}) != key
    assert runner.runner_key({**base, "MLFLOW_TRACKING_URI": "http://mlflow:5000"}) != key


def test_socket_path_stays_within_the_unix_socket_limit(tmp_path: Path) -> None:
    short = runner.socket_path(tmp_path, "k" * 20)
    assert short.parent == tmp_path / "runner"
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    path = runner.socket_path(deep, "k" * 20)
    assert len(os.fsencode(path)) < 100
    assert path != runner.socket_path(tmp_path / "other", "k" * 20)


def test_a_changed_module_file_makes_the_runner_stale(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("x = 1\n")
    snapshot = {str(module): module.stat().st_mtime_ns}
    assert runner._changed(snapshot) is None
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1_000_000))
    assert runner._changed(snapshot) == str(module)
    module.unlink()
    assert runner._changed(snapshot) == str(module)


def test_no_runner_means_the_caller_runs_itself(tmp_path: Path) -> None:
    assert runner.delegate(tmp_path, ["mlops", "run"], {"PATH": "/usr/bin"}) is None
    assert runner.list_runners(tmp_path) == []


def _served(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "] pid " in line] if log.exists() else []


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_runs_are_served_by_the_warm_runner(prefect_api, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    from components.simulate import write_batches

    data = tmp_path / "data"
    write_batches(data, 2, 600, seed=7)
    home = tmp_path / "ws"
    config = write_config(tmp_path / "mlops.yaml", home, data, tmp_path / "expectations")
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "MLOPS__RUNNER__ENABLED": "true",
        "MLOPS__RUNNER__IDLE_MINUTES": "5",
    }
    mlops = [str(Path(sys.executable).parent / "mlops"), "run", "--config", str(config)]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*mlops, *extra], env=env, capture_output=True, text=True, timeout=300, check=False)

    try:
        first = run()  # in its own process; leaves a runner behind
        assert first.returncode == 0, first.stderr[-3000:]
        (info,) = runner.list_runners(home)
        log = runner.runner_dir(home) / f"{info.key}.log"
        _wait_for(lambda: "preloaded" in log.read_text(), 120, "the runner to preload")

        second = run("--json")
        assert second.returncode == 0, second.stderr[-3000:]
        assert '"promoted": false' in second.stdout  # same data: the champion stays
        assert len(_served(log)) == 1

        frame = pd.read_parquet(data)
        bad = tmp_path / "bad.csv"
        frame.drop(columns=["credit_score"]).to_csv(bad, index=False)
        rejected = run("--data", str(bad), "--target", "default", "--id-column", "loan_id", "--name", "loans")
        assert rejected.returncode == 3, rejected.stderr[-3000:]
        assert "rejected" in rejected.stderr
        assert len(_served(log)) == 2

        interrupted = subprocess.Popen(mlops, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: len(_served(log)) == 3, 60, "the third run to start")
        child = int(_served(log)[-1].split("] pid ")[1].split(":")[0])
        time.sleep(1.0)
        interrupted.send_signal(signal.SIGINT)  # forwarded to the forked child
        assert interrupted.wait(timeout=90) != 0
        _wait_for(lambda: not runner.pid_alive(child), 60, "the interrupted child to exit")
    finally:
        stopped = runner.stop_runners(home)
    assert [r.pid for r in stopped] == [info.pid]
    assert not info.socket.exists()
    assert runner.list_runners(home) == []
