"""`mlops serve` as a user runs it: a real BentoML server process answering real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STARTUP_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mlops_serve_answers_predict(trained, tmp_path: Path) -> None:
    config_path, config, result = trained
    port = _free_port()
    mlops = Path(sys.executable).parent / "mlops"
    log = (tmp_path / "serve.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS", "PREFECT_API"))}
    process = subprocess.Popen(
        [str(mlops), "serve", "--config", str(config_path), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.5)
        assert httpx.get(f"{base}/healthz").status_code == 200
        source = sorted(Path(config.data.source).glob("*.parquet"))[0]
        rows = json.loads(
            pd.read_parquet(source).head(3).drop(columns=["default", "application_time"]).to_json(orient="records")
        )
        ok = httpx.post(f"{base}/predict", json={"rows": rows}, timeout=30)
        assert ok.status_code == 200, ok.text
        assert ok.json()["model_version"] == result.model_version
        assert len(ok.json()["predictions"]) == 3
        bad = httpx.post(f"{base}/predict", json={"rows": [{"age": "x"}]}, timeout=30)
        assert bad.status_code == 400 and "missing column" in bad.text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
