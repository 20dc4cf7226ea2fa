"""`mlops serve` and `mlops build` as a user runs them: real server processes answering real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STARTUP_TIMEOUT_S = 180
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS", "PREFECT_API", "BENTOML_HOME"))}
    return {**env, **extra}


@contextmanager
def _server(args: list[str], log_path: Path, env: dict[str, str], port: int) -> Iterator[str]:
    log = log_path.open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready:\n" + log_path.read_text()
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def rows(trained) -> list[dict]:
    _, config, _ = trained
    source = sorted(Path(config.data.source).glob("*.parquet"))[0]
    frame = pd.read_parquet(source).head(20).drop(columns=["default", "application_time"])
    return json.loads(frame.to_json(orient="records"))


def test_mlops_serve_answers_fuzzing_and_switches_to_a_new_champion(trained, rows, tmp_path: Path) -> None:
    from tests.serving.switching import promote_under_traffic

    config_path, config, result = trained
    port = _free_port()
    env = _clean_env(MLOPS__SERVING__RELOAD_SECONDS="1", MLOPS_API_KEY="k3y")
    auth = {"Authorization": "Bearer k3y"}
    args = [str(BIN / "mlops"), "serve", "--config", str(config_path), "--port", str(port)]
    with _server(args, tmp_path / "serve.log", env, port) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.post(f"{base}/predict", json={"rows": rows[:3]}).status_code == 401
        ok = httpx.post(f"{base}/predict", json={"rows": rows[:3]}, headers=auth, timeout=30)
        assert ok.status_code == 200, ok.text
        assert ok.json()["model_version"] == result.model_version and len(ok.json()["predictions"]) == 3
        bad = httpx.post(f"{base}/predict", json={"rows": [{"age": "x"}]}, headers=auth, timeout=30)
        assert bad.status_code == 400 and "age" in bad.text and "region" in bad.text
        # Answered in front of BentoML's API layer, yet inside its metrics middleware: both counted.
        metrics = httpx.get(f"{base}/metrics", headers=auth).text.splitlines()
        counts = {
            code: sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics
                if line.startswith("bentoml_service_request_total{")
                and 'endpoint="/predict"' in line
                and f'http_response_code="{code}"' in line
            )
            for code in (200, 400)
        }
        assert counts[200] >= 1 and counts[400] >= 1, counts

        # Fuzz the OpenAPI schema: whatever is sent, no 5xx.
        fuzz = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "run",
                f"{base}/docs.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "60",
                "--seed",
                "7",
                "--header",
                "Authorization: Bearer k3y",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=_clean_env(SCHEMATHESIS_TELEMETRY="false"),
            cwd=tmp_path,  # its reports go to ./.schemathesis
        )
        assert fuzz.returncode == 0, fuzz.stdout[-4000:]

        # Promote another version while requests flow: every answer is a 200 and the version switches.
        with httpx.Client(headers=auth, timeout=30) as http:
            switch = promote_under_traffic(
                Path(config.home),
                "loans",
                predict=lambda: http.post(f"{base}/predict", json={"rows": rows[:2]}),
                served_version=lambda: httpx.get(f"{base}/metadata", headers=auth).json().get("model_version"),
            )
        assert switch.statuses and set(switch.statuses) == {200}, sorted(set(switch.statuses))
        assert switch.versions == {result.model_version, switch.new_version}


def test_mlops_serve_killed_during_a_hot_reload_comes_back_with_the_new_champion(trained, rows, tmp_path: Path) -> None:
    """SIGKILL the service's worker after it loaded a new champion and before it swapped it in:
    the next start (BentoML's own restart of the worker, or `mlops serve` again) answers with the
    one champion, which loads; the registry is untouched."""
    from components.core.workspace import Workspace
    from components.tracking import registry

    config_path, config, _ = trained
    client = registry.connect(Workspace.at(config.home))
    champion = registry.get_champion(client, "loans")
    assert champion is not None
    port = _free_port()
    env = _clean_env(MLOPS__SERVING__RELOAD_SECONDS="1", MLOPS_FAULT_AT="reloading")
    args = [str(BIN / "mlops"), "serve", "--config", str(config_path), "--port", str(port)]
    new_version = registry.register_model(champion.source, "loans")
    try:
        with _server(args, tmp_path / "serve.log", env, port) as base:
            assert httpx.get(f"{base}/metadata").json()["model_version"] == champion.version
            registry.set_champion(client, "loans", new_version, {"promoted_by": "test"})
            # The worker loads the new version and is killed before the swap; BentoML restarts it, and
            # a fresh worker's first load is not a reload: it serves the new champion.
            deadline = time.monotonic() + 120
            served = None
            while served != new_version and time.monotonic() < deadline:
                try:
                    served = httpx.get(f"{base}/metadata", timeout=5).json().get("model_version")
                except (httpx.TransportError, ValueError):
                    served = None  # killed: nothing answers until the worker is back
                time.sleep(0.5)
        # Killed and restarted by BentoML: its service was initialized twice (a SIGKILL logs nothing).
        log = (tmp_path / "serve.log").read_text(errors="replace")
        assert log.count("Service mlops_prediction_service initialized") >= 2, log[-3000:]
        # The next start of the command, with no fault armed, answers with the one champion.
        with _server(args, tmp_path / "again.log", _clean_env(), port) as base:
            answer = httpx.post(f"{base}/predict", json={"rows": rows[:2]}, timeout=30)
            assert answer.status_code == 200 and answer.json()["model_version"] == new_version
        assert registry.get_champion(client, "loans").version == new_version
        registry.load_model(f"models:/loans/{new_version}")
    finally:
        registry.set_champion(client, "loans", champion.version, {"promoted_by": "test"})


def test_mlops_build_serves_the_champion_without_the_tracking_server(trained, rows, tmp_path: Path) -> None:
    config_path, config, result = trained
    env = _clean_env()
    built = subprocess.run(
        [str(BIN / "mlops"), "build", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1]
    assert tag.startswith("loans:")
    again = subprocess.run(
        [str(BIN / "mlops"), "build", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    # The same registry version is bundled once: the second Bento reuses the model copy.
    assert built.stderr.split("(model ")[1].split(")")[0] == again.stderr.split("(model ")[1].split(")")[0]
    port = _free_port()
    # No workspace, no config, and a tracking server that does not exist: the Bento needs none of them.
    serve_env = _clean_env(
        BENTOML_HOME=str(Path(config.home) / "bentoml"),
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
        HOME=str(tmp_path),
        MLOPS_ALLOW_UNAUTHENTICATED="true",  # a bundled service refuses to start without a key otherwise
    )
    args = [str(BIN / "bentoml"), "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    with _server(args, tmp_path / "bento.log", serve_env, port) as base:
        meta = httpx.get(f"{base}/metadata").json()
        assert meta["model_version"] == result.model_version and meta["origin"].startswith("bundle")
        answer = httpx.post(f"{base}/predict", json={"rows": rows[:4]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["probabilities"]) == 4
